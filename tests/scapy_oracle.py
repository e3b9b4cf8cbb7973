"""Reference decoding with scapy's full dissection, for the oracle tests (slow: one Packet object per frame).

``expected_rows(frame, linktype)`` returns the PACKET_DTYPE fields scapy's dissection implies for each row
the decoder makes of one frame: tunnels are followed with the decoder's (Zeek's) rules, written here
independently over scapy's layers: GRE and IP-in-IP rows become the inner packet, GTP-U/VXLAN add the inner
packet after the outer UDP row, two tunnel levels at most. ``expected`` is the first of those rows (None when
scapy finds no IP layer directly under the link/encapsulation headers).
"""

from __future__ import annotations

import scapy.contrib.erspan  # noqa: F401  (binds ERSPAN I/II/III under GRE)
import scapy.contrib.mpls  # noqa: F401  (binds MPLS under Ethernet)
import scapy.layers.ppp  # noqa: F401  (binds PPPoE session under Ethernet)
from scapy.config import conf
from scapy.contrib.gtp import GTP_U_Header
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, _ICMPv6, _IPv6ExtHdr
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Loopback, LoopbackOpenBSD
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from sensor.packets import addr_to_halves

_RAW = {101: None, 12: None, 14: None, 228: IP, 229: IPv6}


def dissect(frame: bytes, linktype: int) -> Packet | None:
    if linktype in _RAW:
        cls = _RAW[linktype] or (IPv6 if frame and frame[0] >> 4 == 6 else IP)
    else:
        cls = conf.l2types.num2layer.get(linktype)
        if cls is None:
            return None
    pkt = cls(frame)
    if isinstance(pkt, (Loopback, LoopbackOpenBSD)) and pkt.type in (24, 28, 30) and not pkt.haslayer(IPv6):
        return Loopback(frame[:4]) / IPv6(frame[4:])  # scapy binds only some BSD AF_INET6 values
    return pkt


GRE_UNWRAPPED = (0x0800, 0x86DD, 0x6558, 0x88BE, 0x22EB)


def expected(frame: bytes, linktype: int) -> dict | None:
    rows = expected_rows(frame, linktype)
    return rows[0] if rows else None


def expected_rows(frame: bytes, linktype: int) -> list[dict]:
    pkt = dissect(frame, linktype)
    return [] if pkt is None else _rows(pkt, None, 0)


def _rows(layer: Packet, vlan: int | None, depth: int) -> list[dict]:
    while layer is not None and not isinstance(layer, (IP, IPv6)):
        if isinstance(layer, (Dot1Q, Dot1AD)) and not vlan:
            vlan = layer.vlan
        layer = layer.payload if layer.payload else None
    if layer is None:
        return []
    exp, nxt, nonfirst = _ip_fields(layer, vlan)
    if nonfirst or depth >= 2:
        return [exp]
    if isinstance(nxt, (IP, IPv6)) and exp["proto"] in (4, 41):
        return _rows(nxt, exp["vlan_id"], depth + 1) or [exp]
    if isinstance(nxt, GRE) and not nxt.routing_present and (
            nxt.version == 0 and nxt.proto in GRE_UNWRAPPED or nxt.version == 1 and nxt.proto == 0x880B):
        return _rows(nxt.payload, exp["vlan_id"], depth + 1) or [exp]
    if isinstance(nxt, UDP) and exp["proto"] == 17 and (
            isinstance(nxt.payload, GTP_U_Header) and nxt.payload.gtp_type == 255
            or isinstance(nxt.payload, VXLAN) and 4789 in (nxt.sport, nxt.dport)):
        return [exp] + _rows(nxt.payload.payload, exp["vlan_id"], depth + 1)
    return [exp]


def _ip_fields(ip: Packet, vlan: int | None) -> tuple[dict, Packet, bool]:
    """Fields of one IP packet (and its transport header), the layer after the IP headers, non-first flag."""
    exp: dict = {"vlan_id": vlan or 0}
    src, dst = addr_to_halves(ip.src), addr_to_halves(ip.dst)
    exp.update(src_hi=src[0], src_lo=src[1], dst_hi=dst[0], dst_lo=dst[1])
    if isinstance(ip, IP):
        ihl = ip.ihl * 4
        # ip.len 0 is a TCP-segmentation-offload capture: the decoder takes the length from the frame.
        tso_len = len(bytes(ip.original)) if ip.len == 0 else ip.len
        exp.update(ip_version=4, ip_len=tso_len, ttl=ip.ttl, proto=ip.proto, frag_id=ip.id,
                   frag_offset=ip.frag * 8, frag_mf=int(ip.flags.MF), frag_df=int(ip.flags.DF))
        l4_len = tso_len - ihl
        nonfirst = ip.frag > 0
        nxt = ip.payload
    else:
        exp.update(ip_version=6, ip_len=ip.plen + 40, ttl=ip.hlim, frag_id=0, frag_offset=0, frag_mf=0,
                   frag_df=0)
        l4_len, nh, nxt, nonfirst = ip.plen, ip.nh, ip.payload, False
        while isinstance(nxt, _IPv6ExtHdr):
            hdr_len = len(nxt) - len(nxt.payload)
            l4_len -= hdr_len
            nh = nxt.nh
            if isinstance(nxt, IPv6ExtHdrFragment):
                exp.update(frag_id=nxt.id, frag_offset=nxt.offset * 8, frag_mf=nxt.m)
                nonfirst = nxt.offset > 0
            nxt = nxt.payload
        exp["proto"] = nh
    exp["payload_len"] = l4_len
    if nonfirst:
        return exp, nxt, True
    if isinstance(nxt, TCP) and exp["proto"] == 6:
        exp.update(sport=nxt.sport, dport=nxt.dport, tcp_seq=nxt.seq, tcp_ack=nxt.ack, tcp_flags=int(nxt.flags),
                   tcp_win=nxt.window, tcp_urp=nxt.urgptr, payload_len=l4_len - nxt.dataofs * 4)
    elif isinstance(nxt, UDP) and exp["proto"] == 17:
        exp.update(sport=nxt.sport, dport=nxt.dport, payload_len=l4_len - 8)
    elif isinstance(nxt, ICMP) and exp["proto"] == 1 or isinstance(nxt, _ICMPv6) and exp["proto"] == 58:
        # Some ICMPv6 classes name the code byte differently (MLDv2 calls it "res"): read the dissected bytes.
        exp.update(icmp_type=nxt.original[0], icmp_code=nxt.original[1], payload_len=l4_len - 8)
    return exp, nxt, False
