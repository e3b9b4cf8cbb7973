"""Live capture: an AF_PACKET socket with a TPACKET_V3 mmap ring, one ring block = one packet batch.

Why TPACKET_V3: the kernel writes frames straight into a ring shared with this process and hands it over a
whole *block* (many frames) at a time, so Python pays one wake-up and one vectorized ``decode_frames`` call
per block instead of a syscall and a dissection per packet. A block is handed over when it is full or when
``block_timeout_ms`` passes with frames in it, which bounds latency on a quiet link.

Per block, the only per-frame Python work is following the ``tp_next_offset`` chain of frame headers (one
memoryview index per frame); every other header field is gathered with numpy at those offsets, the frames
are decoded in place from the mmap, and the block goes back to the kernel before the batch is yielded.

Setup order matters: the socket is created with protocol 0 (it receives nothing), the BPF filter and the
ring are installed, and only then is it bound to the interface with ETH_P_ALL, so no unfiltered frame can
slip in before the filter is attached (the race libpcap also avoids).

Empty batches: when no block arrives within the block timeout, the iterator yields an empty batch, so a
consumer's wall-clock timers (connection timeouts, ``--duration``) advance on an idle link.

Stopping: ``stop()`` (safe from a signal handler or another thread) wakes the iterator, which then hands over
the frames already in the ring, waiting at most two block timeouts for the kernel to retire the partly
filled block, and ends. Kernel counters (``kernel_stats()``) are cumulative: reading PACKET_STATISTICS resets
them in the kernel, so they are accumulated here.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sensor import bpf
from sensor.decode import decode_frames
from sensor.logs import SkipCounter, get_logger
from sensor.packets import empty_batch
from sensor.sources import count_malformed

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/if_arp.h>
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER, ARPHRD_RAWIP, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 519, 772, 0xFFFE

LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
# Interfaces netwarden decodes: Ethernet and loopback frames carry an Ethernet header; tun devices and
# raw-IP modems (ARPHRD_NONE / ARPHRD_RAWIP) deliver bare IP packets.
ARPHRD_TO_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
    ARPHRD_NONE: LINKTYPE_RAW,
    ARPHRD_RAWIP: LINKTYPE_RAW,
}
# Any other interface type: its frames are kept as rows with malformed=UNKNOWN_LINKTYPE and counted under
# this (unassigned) link type, after one warning naming the interface's ARPHRD type.
LINKTYPE_UNSUPPORTED = 0xFFFF

_REQ3 = struct.Struct("7I")  # struct tpacket_req3
_STATS3 = struct.Struct("3I")  # struct tpacket_stats_v3
_MREQ = struct.Struct("iHH8s")  # struct packet_mreq
_FRAME_SLOT = 2048  # tp_frame_size: unused by TPACKET_V3 beyond the kernel's ring-geometry checks

# struct tpacket_block_desc, as 32-bit word indexes: block_status, num_pkts, offset_to_first_pkt
_BLK_STATUS, _BLK_NUM_PKTS, _BLK_FIRST = 2, 3, 4
# struct tpacket3_hdr, as 32-bit word indexes: word 0 is tp_next_offset, tp_mac the low half of word 6
_HDR_SEC, _HDR_NSEC, _HDR_SNAPLEN, _HDR_LEN, _HDR_STATUS, _HDR_MAC, _HDR_VLAN_TCI = 1, 2, 3, 4, 5, 6, 8

log = get_logger("sensor.live")


class LiveCaptureError(Exception):
    """Live capture cannot start (permissions, interface, ring, filter); the message is one line."""


@dataclass(frozen=True)
class KernelStats:
    """The kernel's PACKET_STATISTICS, cumulative since the socket was opened."""

    packets: int  # frames that passed the BPF filter, dropped ones included (the kernel's tp_packets)
    drops: int  # frames lost because the ring was full (user space too slow)
    freeze_q_cnt: int  # times the ring froze: every block was still owned by user space

    def to_dict(self) -> dict[str, int]:
        return {"received": self.packets, "dropped": self.drops, "ring_full_events": self.freeze_q_cnt}


class LiveSource:
    """Iterable of PACKET_DTYPE batches captured live from one interface; see the module docstring.

    Opening needs CAP_NET_RAW. Use as a context manager (or call ``close()``); iterate once. Like
    ``FileSource``, rows are never dropped: frames not fully decoded keep their ``malformed`` code and are
    counted in ``skips``. ``linktype`` is the LINKTYPE of the interface's frames (1 Ethernet, 101 raw IP).
    """

    def __init__(
        self,
        interface: str,
        bpf_filter: str = "",
        promiscuous: bool = True,
        snaplen: int = 262144,
        block_size: int = 1 << 20,
        block_count: int = 64,
        block_timeout_ms: int = 100,
        ignore_outgoing: bool = True,
    ) -> None:
        if block_size % mmap.PAGESIZE:
            raise LiveCaptureError(f"capture block size {block_size} is not a multiple of the page size "
                                   f"({mmap.PAGESIZE})")
        self.interface = interface
        self.block_size = block_size
        self.block_count = block_count
        self.block_timeout_ms = block_timeout_ms
        self._stopped = False
        self._current = 0
        self._totals = (0, 0, 0)
        self._skips = SkipCounter("sensor.live", "packets")
        self._sock: socket.socket | None = None
        self._mm: mmap.mmap | None = None
        self._wake_r = self._wake_w = -1
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise LiveCaptureError(
                f"live capture on {interface} needs CAP_NET_RAW (run as root, or grant it, e.g. systemd "
                "AmbientCapabilities=CAP_NET_RAW)"
            ) from None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._open(bpf_filter, promiscuous, snaplen, ignore_outgoing)
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------------------

    def _open(self, bpf_filter: str, promiscuous: bool, snaplen: int, ignore_outgoing: bool) -> None:
        sock = self._sock
        try:
            ifindex = socket.if_nametoindex(self.interface)
        except OSError:
            raise LiveCaptureError(f"no such network interface: {self.interface!r}") from None
        arphrd = self._arphrd(sock)
        self.linktype = ARPHRD_TO_LINKTYPE.get(arphrd, LINKTYPE_UNSUPPORTED)
        if self.linktype == LINKTYPE_UNSUPPORTED:
            log.warning("interface link type not decoded; frames are counted as unknown link type",
                        interface=self.interface, arphrd=arphrd)
            if bpf_filter.strip():
                raise LiveCaptureError(f"cannot compile BPF filter {bpf_filter!r} for {self.interface}: "
                                       f"unsupported interface type (ARPHRD {arphrd})")
        try:
            program = bpf.compile_program(bpf_filter, self.linktype, snaplen)
        except bpf.FilterError as exc:
            raise LiveCaptureError(str(exc)) from None
        self._setsockopt(PACKET_VERSION, TPACKET_V3, "TPACKET_V3 (kernel >= 3.2)")
        if ignore_outgoing:
            self._setsockopt(PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING (kernel >= 4.20)")
        bpf.attach(sock, program)
        req = _REQ3.pack(self.block_size, self.block_count, _FRAME_SLOT,
                         self.block_size // _FRAME_SLOT * self.block_count, self.block_timeout_ms, 0, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._mm = mmap.mmap(sock.fileno(), self.block_size * self.block_count, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise LiveCaptureError(
                f"cannot set up a capture ring of {self.block_count} x {self.block_size} bytes: "
                f"{exc.strerror}"
            ) from None
        self._ring = np.frombuffer(self._mm, dtype=np.uint8)
        self._ring32 = self._ring.view("<u4")
        self._ring16 = self._ring.view("<u2")
        self._words = memoryview(self._mm).cast("I")  # fast scalar reads for the header chain walk
        sock.bind((self.interface, ETH_P_ALL))
        if promiscuous:
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b""))

    def _arphrd(self, sock: socket.socket) -> int:
        """The interface's ARPHRD type, asked of the socket's own network namespace (not /sys)."""
        ifreq = struct.pack("16s16x", self.interface.encode())
        return struct.unpack_from("H", fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, ifreq), 16)[0]

    def _setsockopt(self, option: int, value: int, what: str) -> None:
        try:
            self._sock.setsockopt(SOL_PACKET, option, value)
        except OSError as exc:
            if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL):
                raise LiveCaptureError(f"this kernel does not support {what}") from None
            raise

    # -- capture -----------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[np.ndarray]:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopped:
            if self._block_ready():
                yield self._take_block()
                continue
            events = poller.poll(self.block_timeout_ms)
            if not events:
                yield empty_batch()
            elif any(fd == self._sock.fileno() and mask & select.POLLERR for fd, mask in events):
                self._raise_socket_error()
        yield from self._drain()

    def _raise_socket_error(self) -> None:
        """The socket reports an error (e.g. the interface went down): end with a one-line error."""
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise LiveCaptureError(f"capture on {self.interface} failed: {os.strerror(err)}")

    def _drain(self) -> Iterator[np.ndarray]:
        """After stop(): hand over what the ring holds, waiting at most 2 block timeouts for a partial block.

        The kernel retires a partly filled block on its timer (at most two timeouts after the block opened),
        so frames that arrived just before the stop are not lost. Bounded: at most one pass over the ring.
        """
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
        for _ in range(self.block_count):
            if not self._block_ready():
                poller.poll(2 * self.block_timeout_ms + 10)
                if not self._block_ready():
                    return
            yield self._take_block()

    def _block_ready(self) -> bool:
        return bool(self._words[(self._current * self.block_size >> 2) + _BLK_STATUS] & TP_STATUS_USER)

    def _take_block(self) -> np.ndarray:
        """Decode the current block into a batch and give the block back to the kernel."""
        base = self._current * self.block_size
        try:
            return self._decode_block(base)
        finally:
            self._words[(base >> 2) + _BLK_STATUS] = TP_STATUS_KERNEL
            self._current = (self._current + 1) % self.block_count

    def _frame_offsets(self, base: int) -> np.ndarray:
        """Absolute ring offsets of the block's frame headers: the one per-frame Python loop."""
        words = self._words
        n = words[(base >> 2) + _BLK_NUM_PKTS]
        offsets = [0] * n
        off = base + words[(base >> 2) + _BLK_FIRST]
        for i in range(n):
            offsets[i] = off
            off += words[off >> 2]  # tp_next_offset (headers are 16-byte aligned)
        return np.array(offsets, dtype=np.int64)

    def _decode_block(self, base: int) -> np.ndarray:
        hdr = self._frame_offsets(base)
        w = hdr >> 2
        r32 = self._ring32
        ts_ns = r32[w + _HDR_SEC].astype(np.int64) * 1_000_000_000 + r32[w + _HDR_NSEC]
        frame = hdr + self._ring16[(w + _HDR_MAC) * 2]  # tp_mac: frame start relative to its header
        caplen, wirelen = r32[w + _HDR_SNAPLEN], r32[w + _HDR_LEN]
        batch = decode_frames(self._ring, frame, caplen, wirelen, ts_ns, self.linktype)
        # The kernel (or the NIC) moves the outermost VLAN tag out of the frame before the tap: put it back.
        tagged = (r32[w + _HDR_STATUS] & TP_STATUS_VLAN_VALID) != 0
        if tagged.any():
            batch["vlan_id"][tagged] = r32[w[tagged] + _HDR_VLAN_TCI] & 0x0FFF
        count_malformed(batch, self._skips, interface=self.interface)
        return batch

    @property
    def skips(self) -> Counter:
        """Frames not fully decoded so far, per reason text (as ``FileSource.skips``; logged once each)."""
        return self._skips.counts

    def stop(self) -> None:
        """End the iteration (after handing over what the ring holds). Async-signal and thread safe."""
        self._stopped = True
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # pipe full (already woken) or closed: the flag alone suffices
            pass

    # -- counters and teardown ---------------------------------------------------------------------------

    def kernel_stats(self) -> KernelStats:
        """Cumulative kernel counters (reading them resets the kernel's copy, so they are summed here)."""
        if self._sock is not None and self._sock.fileno() >= 0:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
            # Before TPACKET_V3 is set the kernel returns the shorter tpacket_stats (no freeze count).
            fresh = _STATS3.unpack(raw.ljust(_STATS3.size, b"\0"))
            self._totals = tuple(a + b for a, b in zip(self._totals, fresh))
        return KernelStats(*self._totals)

    def close(self) -> None:
        """Release the ring and the socket (the kernel leaves promiscuous mode); counters stay readable."""
        self.kernel_stats()  # the last increment, while the socket is still open
        for name in ("_words", "_ring16", "_ring32", "_ring"):
            view = self.__dict__.pop(name, None)
            if isinstance(view, memoryview):
                view.release()
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a caller still holds a view of the ring: unmapped when it is collected
                pass
            self._mm = None
        if self._sock is not None:
            self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
