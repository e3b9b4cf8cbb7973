"""Writers for crafted capture files in tests: byte-exact control over the things readers get wrong.

scapy's own writers are used too (interop), but they cannot write big-endian pcapng, several interfaces with
different if_tsresol, simple/obsolete packet blocks or deliberately broken record headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Rec:
    data: bytes
    ts_ns: int = 1_600_000_000_123_456_000
    wirelen: int | None = None  # default: len(data)
    incl_len: int | None = None  # override the record header (broken files)


def pcap_bytes(records: list[Rec], linktype: int = 1, order: str = "<", nano: bool = False,
               snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for r in records:
        sec, rem = divmod(r.ts_ns, 1_000_000_000)
        frac = rem if nano else rem // 1000
        incl = len(r.data) if r.incl_len is None else r.incl_len
        wire = len(r.data) if r.wirelen is None else r.wirelen
        out.append(struct.pack(order + "IIII", sec, frac, incl, wire) + r.data)
    return b"".join(out)


def write_pcap(path: Path, records: list[Rec], **kw) -> Path:
    path.write_bytes(pcap_bytes(records, **kw))
    return path


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


class PcapNg:
    """Builds a pcapng file block by block."""

    def __init__(self, order: str = "<") -> None:
        self.order = order
        self.blocks: list[bytes] = []
        self.section()

    def section(self) -> PcapNg:
        self.blocks.append(_block(self.order, 0x0A0D0D0A,
                                  struct.pack(self.order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        return self

    def interface(self, linktype: int, tsresol: int | None = None, snaplen: int = 0,
                  tsoffset: int | None = None) -> PcapNg:
        opts = b""
        if tsresol is not None:
            opts += _option(self.order, 9, bytes([tsresol]))
        if tsoffset is not None:
            opts += _option(self.order, 14, struct.pack(self.order + "q", tsoffset))
        if opts:
            opts += _option(self.order, 0, b"")
        self.blocks.append(_block(self.order, 1, struct.pack(self.order + "HHI", linktype, 0, snaplen) + opts))
        return self

    def epb(self, iface: int, ticks: int, data: bytes, wirelen: int | None = None) -> PcapNg:
        body = struct.pack(self.order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                           len(data) if wirelen is None else wirelen) + data
        self.blocks.append(_block(self.order, 6, body))
        return self

    def opb(self, iface: int, ticks: int, data: bytes) -> PcapNg:
        body = struct.pack(self.order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                           len(data)) + data
        self.blocks.append(_block(self.order, 2, body))
        return self

    def spb(self, data: bytes) -> PcapNg:
        self.blocks.append(_block(self.order, 3, struct.pack(self.order + "I", len(data)) + data))
        return self

    def unknown(self, btype: int = 0x0BAD) -> PcapNg:
        self.blocks.append(_block(self.order, btype, b"whatever"))
        return self

    def bytes(self) -> bytes:
        return b"".join(self.blocks)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.bytes())
        return path
