"""Connection identifiers: Zeek-style ``uid`` and Community ID v1.

Why our own Community ID hash for TCP/UDP/other: the ``communityid`` package builds several Python objects
per flow (about 30 µs each), which on a capture with 150k connections costs more than tracking them. The
hash itself is one SHA-1 over a packed tuple, so flows are hashed here directly. ``community_id`` sends ICMP,
whose port fields need the package's type/code pairing tables, through the package; ``community_ids`` takes
ICMP endpoints already paired (the tracker's key uses the same pairing, ``features.direction``). The tests
check both against the package.

``community_ids`` hashes many connections at once (the tracker builds records in bulk): the hash inputs
are packed by numpy into one buffer and the digests base64-encoded in one call, so a connection costs
about one ``sha1`` call instead of several microseconds of packing and encoding.
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


def _hash_input_dtype(addr: str, ported: bool) -> np.dtype:
    """Community ID v1 hash input (seed 0): seed, src, dst, proto, pad[, sport, dport], big-endian."""
    names = [("seed", ">u2"), ("src", addr), ("dst", addr), ("proto", "u1"), ("pad", "u1")]
    return np.dtype(names + ([("sport", ">u2"), ("dport", ">u2")] if ported else []))


_HASH_INPUTS = {(v6, ported): _hash_input_dtype("(2,)>u8" if v6 else ">u4", ported)
                for v6 in (False, True) for ported in (False, True)}


def community_ids(proto: np.ndarray, a_hi: np.ndarray, a_lo: np.ndarray, a_port: np.ndarray,
                  b_hi: np.ndarray, b_lo: np.ndarray, b_port: np.ndarray, v6: np.ndarray) -> list[str]:
    """Community IDs of many connections whose endpoint A sorts first.

    A sorts first when (A address, A port) <= (B address, B port), addresses compared as numbers of one
    family (``v6`` False: IPv4 in the low 32 bits of ``*_lo``): exactly the order in which Community ID
    puts the source first, so no swapping is needed. ICMP ports are Community ID's port equivalents: the
    type and its counterpart type, or, for a one-way message (A is then the sender), the type and the code.
    One hash per connection; results in input order.
    """
    out: list[str | None] = [None] * len(proto)
    ported = np.isin(proto, _PORTED + (IPPROTO_ICMP, IPPROTO_ICMPV6))  # ICMP: type and code, as ports
    sha1 = hashlib.sha1
    for (is_v6, is_ported), dtype in _HASH_INPUTS.items():
        rows = np.flatnonzero((v6 == is_v6) & (ported == is_ported))
        if not len(rows):
            continue
        msg = np.zeros(len(rows), dtype=dtype)
        msg["proto"] = proto[rows]
        if is_v6:
            msg["src"][:, 0], msg["src"][:, 1] = a_hi[rows], a_lo[rows]
            msg["dst"][:, 0], msg["dst"][:, 1] = b_hi[rows], b_lo[rows]
        else:
            msg["src"], msg["dst"] = a_lo[rows] & 0xFFFFFFFF, b_lo[rows] & 0xFFFFFFFF
        if is_ported:
            msg["sport"], msg["dport"] = a_port[rows], b_port[rows]
        buf, size = msg.tobytes(), dtype.itemsize
        # a 20-byte digest plus one zero byte encodes as its own base64 text without the "=" (28 chars)
        text = base64.b64encode(b"".join([sha1(buf[i:i + size]).digest() + b"\x00"
                                          for i in range(0, len(buf), size)])).decode("ascii")
        for r, i in zip(rows.tolist(), range(0, len(text), 28)):
            out[r] = "1:" + text[i:i + 27] + "="
    return out  # type: ignore[return-value]
