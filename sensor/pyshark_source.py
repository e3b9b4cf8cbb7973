"""A capture-file source that reads through tshark (pyshark), for formats ``sensor.capfile`` does not parse.

Why it exists: netwarden's own reader handles pcap and pcapng (plain or gzip'ed), which is what sensors and
tcpdump write. Captures from elsewhere come in other containers: Sun snoop, Endace ERF, Microsoft NetMon,
Sniffer, NetScaler, Viavi Observer ... Wireshark's wiretap library reads all of them, so this source lets
tshark do the *container* parsing and hands the raw frame bytes to the same vectorized ``decode_frames`` the
file and live sources use. Decoding is therefore identical: the same frame gives the same row.

Why it is slow, and never on the live path: every frame crosses a tshark subprocess as JSON (hex bytes plus
frame metadata), is parsed by pyshark into Python objects and copied into a batch buffer one by one: about
a millisecond per frame against well under a microsecond for ``FileSource``. Use it to read an odd file
once (or convert it with ``editcap -F pcapng``), not for anything with a rate. See docs/tshark.md.

Link types: wiretap reports its own encapsulation numbers (``frame.encap_type``), not pcap LINKTYPE values.
``WTAP_TO_LINKTYPE`` maps back the ones netwarden knows; wiretap merges some (LINKTYPE 12, 14 and 101 are all
"raw IP" and come back as 101; PPP-in-HDLC 50 comes back as PPP 9). ERF records carry their own record type,
mapped by ``ERF_TO_LINKTYPE``. Anything else becomes ``UNMAPPED_LINKTYPE`` (65535, reserved in the LINKTYPE
registry): the row is kept and counted as ``unknown_linktype:65535``; the tshark encapsulation number is
logged once per file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np

from sensor.capfile import CaptureError, bad_wire_len
from sensor.decode import decode_frames
from sensor.logs import get_logger
from sensor.packets import Malformed
from sensor.sources import BatchSource, count_malformed

__all__ = ["TsharkSource", "tshark_available", "WTAP_TO_LINKTYPE", "ERF_TO_LINKTYPE", "UNMAPPED_LINKTYPE"]

UNMAPPED_LINKTYPE = 65535

# wiretap WTAP_ENCAP_* -> pcap LINKTYPE_*, for the link types netwarden decodes or names in statistics.
# Found by reading a one-frame pcap of each LINKTYPE with tshark 4.0; the numbers are append-only upstream.
WTAP_TO_LINKTYPE: dict[int, int] = {
    1: 1,  # Ethernet
    4: 9,  # PPP (also LINKTYPE 50, PPP in HDLC framing)
    6: 10,  # FDDI
    7: 101,  # raw IP (LINKTYPE 12, 14, 101)
    15: 0,  # BSD null
    20: 105,  # 802.11
    21: 119,  # Prism
    23: 127,  # radiotap
    25: 113,  # Linux SLL
    28: 104,  # Cisco HDLC
    97: 192,  # PPI
    129: 228,  # raw IPv4
    130: 229,  # raw IPv6
    174: 108,  # OpenBSD loop
    210: 276,  # Linux SLL2
}
WTAP_ENCAP_ERF = 98

# ERF record type (low 7 bits of the type byte) -> LINKTYPE of the payload wiretap hands out: Ethernet
# records lose their 2-byte offset/pad field, so the frame starts at the MAC header.
ERF_TO_LINKTYPE: dict[int, int] = {
    2: 1,  # TYPE_ETH
    11: 1,  # TYPE_COLOR_ETH
    16: 1,  # TYPE_DSM_COLOR_ETH
    20: 1,  # TYPE_COLOR_HASH_ETH
    22: 228,  # TYPE_IPV4
    23: 229,  # TYPE_IPV6
}

_log = get_logger("sensor.pyshark_source")
_CUT_OFF = re.compile(r"cut short|truncated|cut off", re.IGNORECASE)


def tshark_available() -> bool:
    """True when tshark and captype (both from Wireshark's Debian package ``tshark``) are on PATH."""
    return bool(shutil.which("tshark")) and bool(shutil.which("captype"))


class TsharkSource(BatchSource):
    """Iterable of ``PACKET_DTYPE`` batches for any capture file tshark reads; interface of ``FileSource``.

    Opening checks the file with Wireshark's ``captype`` and reads its first frame (``CaptureError`` when
    tshark is missing or the file is not a packet capture it knows); frames are then read lazily from one
    tshark process, ``batch_size`` at a time.
    """

    def __init__(self, path: str | Path, batch_size: int = 65536) -> None:
        super().__init__(path, batch_size, "sensor.pyshark_source")
        if not tshark_available():
            raise CaptureError(f"{self.path}: tshark not found (Debian: apt-get install tshark)")
        self.format = _check_capture(self.path)

    def __iter__(self) -> Iterator[np.ndarray]:
        import pyshark  # heavy (asyncio, lxml): only when a tshark read actually happens
        from pyshark.capture.capture import TSharkCrashException

        context = {"file": str(self.path), "via": "tshark"}
        batch = _BatchBuilder()
        unmapped: set[int] = set()
        # -J keeps only the frame (and ERF) layer fields in tshark's JSON: less to parse per frame.
        capture = pyshark.FileCapture(str(self.path), keep_packets=False, use_json=True, include_raw=True,
                                      custom_parameters=["-J", "frame erf"])
        error = None
        try:
            for pkt in capture:
                linktype, encap = _linktype(pkt)
                if linktype == UNMAPPED_LINKTYPE and encap not in unmapped:
                    unmapped.add(encap)
                    _log.warning("tshark encapsulation has no pcap link type", encap_type=encap, **context)
                batch.add(pkt, linktype)
                if len(batch) >= self.batch_size:
                    yield self._decode(batch.take(), context)
        except TSharkCrashException as exc:  # tshark stopped on a damaged record: keep what it read
            error = str(exc)
        except KeyError as exc:  # pyshark needs frame.time_epoch: a pcapng Simple Packet Block has none
            self._skips.add("unparsable_frame", 1, detail=f"pyshark: frame without {exc}; reading stops",
                            **context)
        finally:
            error = _close(capture, TSharkCrashException) or error
        if error:
            detail = _tshark_error(error)
            reason = "cut_off_record" if _CUT_OFF.search(detail) else "tshark_error"
            self._skips.add(reason, 1, detail=detail, **context)
        if len(batch):
            yield self._decode(batch.take(), context)

    def _decode(self, frames: tuple[np.ndarray, ...], context: dict) -> np.ndarray:
        out = decode_frames(*frames)
        # The same record sanity rule as the pcap/pcapng reader, so a garbage length is flagged alike.
        bad = bad_wire_len(out["wirelen"], out["caplen"])
        if bad.any():
            out["malformed"][bad] = Malformed.BAD_RECORD
            self._skips.add("bad_record:orig_len", int(bad.sum()), **context)
        count_malformed(out, self._skips, **context)
        return out


class _BatchBuilder:
    """Collects frames into one byte buffer plus per-frame columns: the arguments of ``decode_frames``."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._offsets: list[int] = []
        self._wirelens: list[int] = []
        self._ts_ns: list[int] = []
        self._linktypes: list[int] = []
        self._link_ids: list[int] = []

    def __len__(self) -> int:
        return len(self._offsets)

    def add(self, pkt, linktype: int) -> None:
        frame = pkt.frame_info
        self._offsets.append(len(self._buf))
        if "FRAME_RAW" in pkt:  # absent for a zero-length frame
            self._buf += bytes.fromhex(pkt.frame_raw.value)
        self._wirelens.append(int(frame.len))
        self._ts_ns.append(int(Decimal(frame.time_epoch).scaleb(9)))  # exact: tshark prints 9 decimals
        self._linktypes.append(linktype)
        self._link_ids.append(int(_field(frame, "interface_id", "0")))

    def take(self) -> tuple[np.ndarray, ...]:
        """The ``decode_frames`` arguments for the collected frames; empties the builder."""
        buf = np.frombuffer(bytes(self._buf), dtype=np.uint8)
        offsets = np.array(self._offsets, dtype=np.int64)
        caplens = np.diff(np.append(offsets, len(buf))).astype(np.uint32)
        frames = (buf, offsets, caplens, np.array(self._wirelens, dtype=np.uint32),
                  np.array(self._ts_ns, dtype=np.int64), np.array(self._linktypes, dtype=np.uint16),
                  np.array(self._link_ids, dtype=np.uint16))
        self._reset()
        return frames


def _linktype(pkt) -> tuple[int, int]:
    """(pcap LINKTYPE, wiretap encapsulation) of one pyshark packet."""
    encap = int(pkt.frame_info.encap_type)
    if encap == WTAP_ENCAP_ERF and "erf" in pkt:
        return ERF_TO_LINKTYPE.get(int(pkt.erf.types, 16) & 0x7F, UNMAPPED_LINKTYPE), encap
    return WTAP_TO_LINKTYPE.get(encap, UNMAPPED_LINKTYPE), encap


def _field(layer, name: str, default: str) -> str:
    return layer.get_field(name) if name in layer.field_names else default


def _check_capture(path: Path) -> str:
    """Wireshark's name for the file's format (``snoop``, ``erf``, ``pcapng`` ...); ``CaptureError`` if the
    file is no packet capture: unknown to wiretap, unreadable, or one of the non-network files wiretap also
    opens (MP4, JPEG ...: their records carry no timestamp, and pyshark cannot parse those)."""
    kind = _run(["captype", str(path)], path).rpartition(":")[2].strip()
    if not kind or kind == "unknown":
        raise CaptureError(f"{path}: not a capture file tshark can read")
    first = _run(["tshark", "-r", str(path), "-c", "1", "-T", "fields", "-e", "frame.encap_type",
                  "-e", "frame.time_epoch"], path).split("\t")
    if len(first) == 2 and first[0].strip() and not first[1].strip():
        raise CaptureError(f"{path}: {kind} file without packet timestamps, not a packet capture")
    return kind


def _run(cmd: list[str], path: Path) -> str:
    """stdout of a Wireshark tool; its last stderr line as a ``CaptureError`` when it fails."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"{path}: {Path(cmd[0]).name} failed: {exc}") from None
    if res.returncode != 0:
        why = _last_line(res.stderr).removeprefix(f"{Path(cmd[0]).name}: ") or f"{cmd[0]} failed"
        raise CaptureError(f"{path}: {why}")
    return res.stdout


def _close(capture, crash: type[Exception]) -> str | None:
    """Close pyshark's capture; tshark's complaint if it exited with an error (a cut-off file), else None.

    pyshark raises that complaint from ``close()`` and keeps the dead process, so its ``__del__`` would raise
    it again at garbage collection: the process list is emptied once the error has been taken.
    """
    try:
        capture.close()
    except crash as exc:
        capture._running_processes.clear()
        return str(exc)
    return None


def _tshark_error(text: str) -> str:
    """The line tshark printed on stderr, out of a pyshark ``TSharkCrashException`` message."""
    for line in text.splitlines():
        if line.startswith("Last error line:"):
            return line.removeprefix("Last error line:").strip()
    return _last_line(text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
