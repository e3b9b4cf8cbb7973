"""Connection identifiers: Zeek-style ``uid`` and Community ID v1.

Why our own Community ID hash for TCP/UDP/other: the ``communityid`` package builds several Python objects
per flow (about 30 µs each), which on a capture with 150k connections costs more than tracking them. The
hash itself is one SHA-1 over a packed tuple, so TCP/UDP/SCTP/other flows are hashed here directly; ICMP,
whose port fields need the package's type/code pairing tables, goes through the package. The tests check
the fast path against the package.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct

import communityid
import numpy as np

from sensor.packets import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PORTED = (IPPROTO_TCP, IPPROTO_UDP, 132)  # protocols whose tuple includes ports (SCTP = 132)


class UidGenerator:
    """Zeek-style connection uids: "C" + 17 random base62 digits (Zeek: base62 of 96 random bits).

    Drawn in blocks with numpy because a big-integer base62 conversion per connection costs more than
    tracking a short connection. A fixed ``seed`` makes the uids reproducible (tests, golden files);
    ``None`` seeds from the OS.
    """

    _BLOCK = 4096
    _DIGITS = np.frombuffer(_BASE62.encode("ascii"), dtype=np.uint8)

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._pool: list[str] = []

    def next(self) -> str:
        if not self._pool:
            chars = self._DIGITS[self._rng.integers(0, 62, size=(self._BLOCK, 17))]
            text = chars.tobytes().decode("ascii")
            self._pool = ["C" + text[i:i + 17] for i in range(0, len(text), 17)]
        return self._pool.pop()


_icmp_cid = communityid.CommunityID(seed=0)


def community_id(proto: int, orig: bytes, orig_p: int, resp: bytes, resp_p: int) -> str:
    """Community ID v1 (seed 0, base64) of a connection; addresses packed (4 or 16 bytes)."""
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        make = communityid.FlowTuple.make_icmp if proto == IPPROTO_ICMP else communityid.FlowTuple.make_icmp6
        return _icmp_cid.calc(make(str(ipaddress.ip_address(orig)), str(ipaddress.ip_address(resp)),
                                   orig_p, resp_p))
    src, dst = orig, resp
    if proto in _PORTED:
        sport, dport = orig_p, resp_p
        if (src, sport) > (dst, dport):
            src, dst, sport, dport = dst, src, dport, sport
        tail = struct.pack("!BxHH", proto, sport, dport)
    else:
        if src > dst:
            src, dst = dst, src
        tail = struct.pack("!Bx", proto)
    digest = hashlib.sha1(b"\x00\x00" + src + dst + tail).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")
