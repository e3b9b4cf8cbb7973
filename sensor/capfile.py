"""Capture-file readers: classic pcap and pcapng (optionally gzip-compressed) -> chunks of frame locations.

A reader never builds per-packet Python objects. It reads the file (through zlib when gzip-compressed) in
blocks of ``READ_BLOCK`` bytes, walks the record headers of a block with a tight loop that only collects
*where* each record starts (the one inherently sequential step: each header says where the next one is),
then pulls every header field out with numpy fancy indexing. A record cut by the block boundary is carried
over to the next block, so memory stays flat whatever the file size (a multi-GB capture, or a gzip one,
costs a few MB). A ``RecordChunk`` is a block's bytes plus per-frame arrays (offset, caplen, wirelen,
timestamp, interface): exactly what ``sensor.decode.decode_frames`` takes, with no copying of packet data.

Damaged files are the normal case in the wild (the nDPI corpus has fuzzed ones on purpose), so record-level
problems are *counted*, never raised, in ``RecordChunk.skips`` (reason -> count):

- ``bad_record:incl_len>snaplen``, ``bad_record:orig_len`` (orig_len < incl_len or beyond any link's MTU):
  the record is readable, it is kept as a row marked ``Malformed.BAD_RECORD`` so the count stays in one
  place with the decode counts;
- ``bad_record:header`` (incl_len or block length impossible: the rest of the file cannot be located),
  ``bad_record:interface`` (pcapng packet for an undeclared interface), ``cut_off_record`` (last record ends
  past EOF), ``cut_off_gzip`` (compressed stream ends early), ``corrupt_gzip`` (compressed stream damaged
  after its start): the reader cannot go on or the record has no usable bytes, so there is no row.

Only a file that is not a capture at all (unknown magic, too short, unreadable, bad gzip) raises
``CaptureError``, whose message is one line for the CLI.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# libpcap's MAXIMUM_SNAPLEN: no link type captures more per record; larger incl_len means a corrupt header.
MAX_RECORD_LEN = 262144
# Largest believable orig_len: GSO/BIG TCP frames reach ~185 KB; beyond this the header is garbage.
MAX_WIRE_LEN = 1 << 18
MAX_TS_OFFSET_S = 10**10  # if_tsoffset beyond ~300 years is a corrupt option
# Bytes read (decompressed) per step: large enough to amortise the per-block work, small enough that peak
# memory does not depend on the file size. Must exceed the largest record/block (MAX_RECORD_LEN + 4096).
READ_BLOCK = 4 << 20
GZIP_INPUT = 1 << 20  # compressed bytes fed to zlib per step

PCAP_MAGICS = {  # first four bytes -> (struct byte order, timestamp fraction units per second)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
BYTE_ORDER_MAGIC = 0x1A2B3C4D

# pcapng block types
_IDB, _SPB, _EPB, _OPB, _SHB = 1, 3, 6, 2, 0x0A0D0D0A


class CaptureError(Exception):
    """The file is not a readable capture at all; the message is one line naming the file."""


@dataclass
class RecordChunk:
    """Locations of up to ``batch_size`` consecutive frames inside ``buf`` (all arrays have one row per frame)."""

    buf: np.ndarray  # uint8 view of the block of the file holding these frames (offsets index it)
    offsets: np.ndarray  # int64: where each frame's data starts in buf
    caplens: np.ndarray  # uint32: bytes captured
    wirelens: np.ndarray  # uint32: bytes on the wire
    ts_ns: np.ndarray  # int64: nanoseconds since the epoch
    linktypes: np.ndarray  # uint16 per frame
    link_ids: np.ndarray  # uint16 per frame: pcapng interface index in file order, 0 for pcap
    bad: np.ndarray  # bool per frame: readable record with impossible lengths (-> Malformed.BAD_RECORD)
    skips: Counter = field(default_factory=Counter)  # record-level problems found while reading this chunk

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_sec: int  # if_tsresol as ticks per second
    offset_s: int  # if_tsoffset


class _ByteStream:
    """The file's bytes in order, inflated on the fly when it is gzip-compressed (several members too, as
    gzip(1) concatenates them). Damage after the start is counted in ``problems``, never raised."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh = open(path, "rb")
            self.gzip = self._fh.read(2) == GZIP_MAGIC
            self._fh.seek(0)
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read ({exc.strerror or exc})") from None
        self._inflater = zlib.decompressobj(wbits=31) if self.gzip else None
        self._input = b""  # compressed bytes not yet given to the inflater
        self._produced = 0
        self.problems: Counter = Counter()

    def __enter__(self) -> _ByteStream:
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the (decompressed) file."""
        try:
            if not self.gzip:
                return self._fh.read(n)
            parts, have = [], 0
            while have < n and self._inflater is not None:
                out = self._inflate(n - have)
                parts.append(out)
                have += len(out)
            self._produced += have
            return b"".join(parts)
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot read ({exc.strerror or exc})") from None

    def _inflate(self, want: int) -> bytes:
        if not self._input:
            self._input = self._fh.read(GZIP_INPUT)
            if not self._input:  # end of the file: take what zlib still holds
                out = self._inflater.flush()
                if not self._inflater.eof:
                    self.problems["cut_off_gzip"] += 1  # a copy still in progress: yield what it holds
                self._inflater = None
                return out
        try:
            out = self._inflater.decompress(self._input, want)
        except zlib.error as exc:
            if not self._produced:
                raise CaptureError(f"{self.path}: corrupt gzip file ({exc})") from None
            self.problems["corrupt_gzip"] += 1
            self._inflater = None
            return b""
        self._input = self._inflater.unconsumed_tail
        if self._inflater.eof:
            # Past the member's end zlib reports the rest as unused_data (unconsumed_tail repeats it).
            self._input = self._inflater.unused_data or self._fh.read(GZIP_INPUT)
            # Another member follows, or the file ends (anything else is trailing padding).
            self._inflater = zlib.decompressobj(wbits=31) if self._input[:2] == GZIP_MAGIC else None
        return out


class CaptureFile:
    """An opened capture: validates the file header at construction, then yields ``RecordChunk``s."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with _ByteStream(self.path) as stream:
            head = stream.read(28)
        if head[:4] in PCAP_MAGICS:
            if len(head) < 24:
                raise CaptureError(f"{self.path}: pcap file header cut off ({len(head)} bytes)")
            self.format = "pcap"
        elif head[:4] == PCAPNG_SHB:
            if len(head) < 28:
                raise CaptureError(f"{self.path}: pcapng section header cut off ({len(head)} bytes)")
            self.format = "pcapng"
        else:
            what = "empty file" if not head else f"unknown magic 0x{head[:4].hex()}"
            raise CaptureError(f"{self.path}: not a pcap or pcapng capture ({what})")

    def chunks(self, batch_size: int = 65536) -> Iterator[RecordChunk]:
        """Chunks of up to ``batch_size`` frames (fewer at block ends), read lazily; each call rereads."""
        reader = _pcap_chunks if self.format == "pcap" else _pcapng_chunks
        with _ByteStream(self.path) as stream:
            yield from reader(_Blocks(stream), batch_size)
            if stream.problems:
                yield _skips_only(np.zeros(0, np.uint8), Counter(stream.problems))


class _Blocks:
    """The current block of a stream as a uint8 array, refilled with the unread tail carried over."""

    def __init__(self, stream: _ByteStream) -> None:
        self._stream = stream
        data = stream.read(READ_BLOCK)
        self.eof = len(data) < READ_BLOCK
        self.buf = np.frombuffer(data, dtype=np.uint8)

    def refill(self, keep_from: int) -> None:
        """Drop the bytes before ``keep_from`` and append the next block (offsets restart at 0)."""
        more = self._stream.read(READ_BLOCK)
        self.eof = len(more) < READ_BLOCK
        self.buf = np.frombuffer(self.buf[keep_from:].tobytes() + more, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- classic pcap


def _u32_views(buf: np.ndarray, order: str) -> list[memoryview]:
    """The block's 32-bit words at each of the four alignments, as native-order memoryviews.

    ``views[off & 3][off >> 2]`` is the word at byte ``off``: plain indexing, inlined in the record walk (the
    one per-record Python step), about twice as fast as ``struct.unpack_from`` or a helper call. A file in
    the other byte order gets byte-swapped copies (four passes of numpy over the block, milliseconds).
    """
    views = []
    for k in range(4):
        words = buf[k: k + 4 * ((len(buf) - k) // 4)].view(order + "u4")
        native = words if words.dtype.isnative else words.astype(np.uint32)
        views.append(memoryview(native).cast("B").cast("I"))
    return views


def _word(views: list[memoryview], off: int) -> int:
    return views[off & 3][off >> 2]


def _raw(buf: np.ndarray):
    """The object under ``buf`` for ``struct``: bytes are much faster to unpack from than a view."""
    base = buf.base
    if isinstance(base, bytes) and len(base) == len(buf):
        return base
    return memoryview(buf)


def _pcap_chunks(blocks: _Blocks, batch_size: int) -> Iterator[RecordChunk]:
    buf = blocks.buf
    order, units = PCAP_MAGICS[buf[:4].tobytes()]
    _, _, _, _, snaplen, linktype_field = struct.unpack_from(order + "HHiIII", buf[:24].tobytes(), 4)
    # The upper bits of the link-type field carry FCS info (pcap-savefile(5)); the type is the low 16 bits.
    linktype = linktype_field & 0xFFFF
    u32 = np.dtype(order + "u4")
    off = 24
    while True:
        buf = blocks.buf
        words = _u32_views(buf, order)
        end = len(buf)
        starts: list[int] = []
        append = starts.append
        # The sequential walk: only the next offset is computed per record; header sanity is checked
        # vectorized afterwards. It stops at the first record not wholly inside the block.
        for _ in range(batch_size):
            if off + 16 > end:
                break
            at = off + 8
            nxt = off + 16 + words[at & 3][at >> 2]
            if nxt > end:
                break
            append(off)
            off = nxt
        skips: Counter = Counter()
        stop = False
        pos = np.asarray(starts, dtype=np.int64)
        hdr = _take_rows(buf, pos, 16).reshape(-1).view(u32).reshape(-1, 4) if len(pos) else np.zeros((0, 4), u32)
        incl = hdr[:, 2].astype(np.int64)
        broken = np.flatnonzero(incl > MAX_RECORD_LEN)
        if len(broken):  # the next header cannot be located: everything from here on is lost
            pos, hdr, incl, stop = pos[: broken[0]], hdr[: broken[0]], incl[: broken[0]], True
        elif len(starts) < batch_size:  # the walk reached the end of the block
            if off + 16 <= end and _word(words, off + 8) > MAX_RECORD_LEN:
                stop = True
            elif blocks.eof:
                if off < end:
                    skips["cut_off_record"] += 1  # last record (or its header) ends past EOF
                stop = True
        if stop and (len(broken) or off + 16 <= end and _word(words, off + 8) > MAX_RECORD_LEN):
            skips["bad_record:header"] += 1
        sec, frac, orig = (hdr[:, i].astype(np.int64) for i in (0, 1, 3))
        ts_ns = sec * 1_000_000_000 + frac * (1_000_000_000 // units)
        n = len(pos)
        if n or skips:
            yield _make_chunk(buf, pos + 16, incl, orig, ts_ns, np.full(n, linktype, np.uint16),
                              np.zeros(n, np.uint16), np.full(n, snaplen, np.int64), skips)
        if stop:
            return
        if len(starts) < batch_size:
            blocks.refill(off)
            off = 0


def _take_rows(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """``width`` bytes at each position (positions may sit within ``width`` of the end: padded there)."""
    from numpy.lib.stride_tricks import as_strided

    if len(buf) < width:
        buf = np.concatenate([buf, np.zeros(width, np.uint8)])
    safe = np.minimum(pos, len(buf) - width)
    rows = as_strided(buf, shape=(len(buf) - width + 1, width), strides=(1, 1), writeable=False)[safe]
    short = pos > len(buf) - width
    if short.any():  # only the very last record can be that close to the end
        for i in np.flatnonzero(short):
            tail = buf[pos[i]:]
            rows[i] = np.concatenate([tail, np.zeros(width - len(tail), np.uint8)])
    return rows


def bad_wire_len(orig: np.ndarray, incl: np.ndarray) -> np.ndarray:
    """Records whose orig_len cannot be true: shorter than what was captured, or beyond any link's MTU."""
    return (orig < incl) | (orig > MAX_WIRE_LEN)


def _make_chunk(buf, data_pos, incl, orig, ts_ns, linktypes, link_ids, snaplens, skips) -> RecordChunk:
    """Flag readable-but-impossible records and count them (one place for pcap and pcapng)."""
    over_snap = (snaplens > 0) & (incl > snaplens)
    bad_orig = bad_wire_len(orig, incl)
    skips["bad_record:incl_len>snaplen"] += int(over_snap.sum())
    skips["bad_record:orig_len"] += int((bad_orig & ~over_snap).sum())
    skips = Counter({k: v for k, v in skips.items() if v})
    return RecordChunk(buf=buf, offsets=data_pos, caplens=incl.astype(np.uint32),
                       wirelens=np.minimum(orig, 0xFFFFFFFF).astype(np.uint32), ts_ns=ts_ns,
                       linktypes=linktypes, link_ids=link_ids, bad=over_snap | bad_orig, skips=skips)


def _skips_only(buf: np.ndarray, skips: Counter) -> RecordChunk:
    """An empty chunk that only reports record-level problems."""
    empty = np.zeros(0, np.int64)
    return _make_chunk(buf, empty, empty, empty, empty, np.zeros(0, np.uint16), np.zeros(0, np.uint16), empty,
                       skips)


# ---------------------------------------------------------------------------------------------------- pcapng


def _parse_idb(raw: memoryview, off: int, blen: int, order: str) -> _Interface:
    linktype, _, snaplen = struct.unpack_from(order + "HHI", raw, off + 8)
    units, offset_s = 1_000_000, 0
    opt, stop = off + 16, off + blen - 4
    while opt + 4 <= stop:
        code, length = struct.unpack_from(order + "HH", raw, opt)
        value = opt + 4
        if code == 0 or value + length > stop:
            break
        if code == 9 and length >= 1:  # if_tsresol: MSB clear -> 10^-n, set -> 2^-n
            res = raw[value]
            units = 2 ** (res & 0x7F) if res & 0x80 else 10 ** res
        elif code == 14 and length >= 8:  # if_tsoffset: seconds added to every timestamp
            offset_s = struct.unpack_from(order + "q", raw, value)[0]
            if abs(offset_s) > MAX_TS_OFFSET_S:  # garbage: would overflow ns timestamps
                offset_s = 0
        opt = value + ((length + 3) & ~3)
    return _Interface(linktype, snaplen, max(units, 1), offset_s)


def _pcapng_chunks(blocks: _Blocks, batch_size: int) -> Iterator[RecordChunk]:
    off = 0
    order = "<"
    head = struct.Struct("<III").unpack_from  # block type, block length, EPB interface id
    interfaces: list[_Interface] = []  # every IDB of the file in order; link_id indexes this
    section_base = 0  # index in `interfaces` of the current section's interface 0
    max_block = MAX_RECORD_LEN + 4096
    while True:
        buf = blocks.buf
        raw = _raw(buf)
        end = len(buf)
        offsets: list[int] = []  # packet blocks of this chunk
        ifaces: list[int] = []  # their interface, as an index into `interfaces`
        special: list[tuple[int, int]] = []  # (row, block type) of the rare OPB/SPB rows
        swapped_from: list[tuple[int, bool]] = [(0, order == ">")]  # (first row, big-endian) per section
        skips: Counter = Counter()
        add_off, add_iface = offsets.append, ifaces.append
        left = batch_size
        stop = False
        while off + 12 <= end:
            btype, blen, iface = head(raw, off)
            # Fast path: a well-formed EPB for a declared interface (nearly every block of a capture).
            if btype == _EPB and 32 <= blen <= max_block and not blen & 3 and off + blen <= end and \
                    section_base + iface < len(interfaces):
                add_off(off)
                add_iface(section_base + iface)
                off += blen
                left -= 1
                if not left:
                    break
                continue
            if btype == _SHB:  # the type reads the same in both byte orders
                bom = struct.unpack_from("<I", raw, off + 8)[0]
                if bom not in (BYTE_ORDER_MAGIC, 0x4D3C2B1A):
                    skips["bad_record:header"] += 1
                    stop = True
                    break
                order = "<" if bom == BYTE_ORDER_MAGIC else ">"
                head = struct.Struct(order + "III").unpack_from
                btype, blen, iface = head(raw, off)
            if blen < 12 or blen & 3 or blen > max_block:
                skips["bad_record:header"] += 1
                stop = True
                break
            if off + blen > end:
                if blocks.eof:
                    skips["cut_off_record"] += 1
                    stop = True
                break  # else: the block continues in the next read
            if btype == _SHB:
                section_base = len(interfaces)
                swapped_from.append((len(offsets), order == ">"))
            elif btype == _IDB and blen >= 20:
                interfaces.append(_parse_idb(raw, off, blen, order))
            elif btype in (_EPB, _OPB, _SPB):
                if btype == _OPB:
                    iface = struct.unpack_from(order + "H", raw, off + 8)[0]
                elif btype == _SPB:
                    iface = 0
                if blen < (16 if btype == _SPB else 32):
                    skips["bad_record:header"] += 1  # packet block too short to hold its own fields
                elif section_base + iface >= len(interfaces):
                    skips["bad_record:interface"] += 1
                else:
                    if btype != _EPB:
                        special.append((len(offsets), btype))
                    add_off(off)
                    add_iface(section_base + iface)
                    left -= 1
            off += blen
            if not left:
                break
        if left and not stop and blocks.eof:
            if off < end:
                skips["cut_off_record"] += 1  # trailing bytes too short for a block header
            stop = True
        if offsets:
            yield _pcapng_chunk(buf, offsets, ifaces, special, swapped_from, interfaces, skips)
        elif skips:
            yield _skips_only(buf, skips)
        if stop:
            return
        if left:
            blocks.refill(off)
            off = 0


def _pcapng_chunk(buf: np.ndarray, offsets: list[int], ifaces: list[int], special: list[tuple[int, int]],
                  swapped_from: list[tuple[int, bool]], interfaces: list[_Interface], skips: Counter):
    pos = np.asarray(offsets, dtype=np.int64)
    iface = np.asarray(ifaces, dtype=np.int64)
    btype = np.full(len(pos), _EPB, dtype=np.int64)
    for row, kind in special:
        btype[row] = kind
    swapped = np.zeros(len(pos), dtype=bool)
    for first, big in swapped_from:
        swapped[first:] = big
    # 28 header bytes: type, length, iface, ts_hi, ts_lo, caplen, origlen (EPB; OPB shares the layout, its
    # 16-bit interface id was resolved while walking). Clipped: a short SPB may sit at the very end.
    idx = np.minimum(pos[:, None] + np.arange(28), len(buf) - 1)
    words = buf[idx].reshape(-1).view("<u4").reshape(-1, 7).copy()
    words[swapped] = words[swapped].byteswap()
    blen = words[:, 1].astype(np.int64)
    ts = (words[:, 3].astype(np.uint64) << np.uint64(32)) | words[:, 4].astype(np.uint64)
    caplen = words[:, 5].astype(np.int64)
    orig = words[:, 6].astype(np.int64)
    data_pos = pos + 28
    room = blen - 32  # bytes between the fixed fields and the trailing length
    spb = btype == _SPB
    if spb.any():  # SPB: original length at +8, data at +12, caplen implied by the block and the snaplen
        orig[spb] = words[spb, 2]
        snap = np.array([interfaces[i].snaplen or MAX_RECORD_LEN for i in iface[spb]], dtype=np.int64)
        caplen[spb] = np.minimum(np.minimum(orig[spb], blen[spb] - 16), snap)
        data_pos[spb] = pos[spb] + 12
        room[spb] = blen[spb] - 16
        ts[spb] = 0  # SPBs carry no timestamp
    keep = caplen <= room
    if not keep.all():
        skips["bad_record:header"] += int((~keep).sum())
        pos, iface, caplen, orig, ts, data_pos = (a[keep] for a in (pos, iface, caplen, orig, ts, data_pos))
    lt = np.array([i.linktype for i in interfaces] or [0], dtype=np.uint16)
    snaplens = np.array([i.snaplen for i in interfaces] or [0], dtype=np.int64)
    ts_ns = _ticks_to_ns(ts, iface, interfaces)
    return _make_chunk(buf, data_pos, caplen, orig, ts_ns, lt[iface], iface.astype(np.uint16), snaplens[iface],
                       skips)


def _ticks_to_ns(ticks: np.ndarray, iface: np.ndarray, interfaces: list[_Interface]) -> np.ndarray:
    """Per-interface if_tsresol/if_tsoffset conversion to ns, vectorized per distinct interface."""
    out = np.zeros(len(ticks), dtype=np.int64)
    for i in np.unique(iface):
        rows = iface == i
        spec = interfaces[int(i)]
        t = ticks[rows]
        units = spec.units_per_sec
        if 1_000_000_000 % units == 0:
            ns = t.astype(np.int64) * (1_000_000_000 // units)
        elif units >= 1 << 63:  # a corrupt if_tsresol (up to 2^127): ticks are all below one second
            ns = (t.astype(np.float64) * (1e9 / units)).astype(np.int64)
        else:
            sec = (t // np.uint64(units)).astype(np.int64)
            frac = (t % np.uint64(units)).astype(np.float64)
            ns = sec * 1_000_000_000 + np.round(frac * (1e9 / units)).astype(np.int64)
        out[rows] = ns + spec.offset_s * 1_000_000_000
    return out
