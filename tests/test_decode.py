"""Vectorized decoder: oracle against scapy on real captures, crafted frames for every link type and
encapsulation, IPv6 extension chains, fragments, truncation at every byte, and the whole corpus."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.dot11 import Dot11, Dot11QoS, RadioTap
from scapy.layers.l2 import ARP, GRE, GRE_PPTP, LLC, SNAP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.layers.ppp import PPP, PPPoE

from sensor.capfile import CaptureError
from sensor.decode import MAX_ENCAP_LAYERS, decode_frames
from sensor.packets import (PACKET_DTYPE, TCP_ACK, TCP_SYN, TUNNEL_GRE, TUNNEL_GTP, TUNNEL_IPIP,
                            TUNNEL_VXLAN, Malformed, frame_rows, halves_to_addr)
from sensor.sources import open_source
from tests.scapy_oracle import expected, expected_rows

M = Malformed
TCP4 = IP(src="10.1.2.3", dst="10.9.8.7", ttl=33, id=777) / TCP(sport=40000, dport=443, flags="SA", seq=11,
                                                                ack=22, window=999, urgptr=5) / (b"x" * 10)
TCP6 = IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=7) / TCP(sport=1, dport=22, flags="A") / b"hello"
UDP6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5353, dport=53) / b"q"


def decode(*frames: bytes, linktype: int | list[int] = 1, wirelens: list[int] | None = None) -> np.ndarray:
    """Decode frames laid out back to back in one buffer (as the readers and the ring do)."""
    buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
    lens = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    lts = np.asarray(linktype if isinstance(linktype, list) else [linktype] * len(frames), dtype=np.uint16)
    wire = lens if wirelens is None else np.asarray(wirelens)
    return decode_frames(buf, offsets, lens, wire, np.arange(len(frames)), lts)


def one(frame: bytes, linktype: int = 1, **kw) -> np.void:
    return decode(frame, linktype=linktype, **kw)[0]


def assert_matches_scapy(row: np.void, frame: bytes, linktype: int) -> None:
    exp = expected(frame, linktype)
    assert exp is not None, "scapy found no IP layer"
    got = {k: int(row[k]) for k in exp}
    assert got == {k: int(v) for k, v in exp.items()}


# ------------------------------------------------------------------------------------------- oracle tests

ORACLE_SAMPLE = [
    "ndpi/pcap/KakaoTalk_chat.pcap",  # Linux SLL
    "ndpi/pcap/quic-v2.pcapng",  # SLL, IPv6
    "ndpi/pcap/bets.pcapng",  # raw IP
    "ndpi/pcap/nats.pcap",  # BSD null
    "ndpi/pcap/openwire.pcapng",  # BSD null, IPv6
    "ndpi/pcap/hsrp2_ipv6.pcapng",  # VLAN, IPv6
    "ndpi/pcap/dns_fragmented.pcap",  # IPv6 fragments
    "ndpi/pcap/dnscrypt-v1-and-resolver-pings.pcap",  # IPv4 fragments, ICMP
    "ndpi/pcap/ip_fragmented_garbage.pcap",
    "ndpi/pcap/discord_mid_flow.pcap",  # QinQ + PPPoE
    "ndpi/pcap/syslog.pcap",  # PPPoE
    "ndpi/pcap/smtp-starttls.pcap",  # VLAN, IPv6
    "ndpi/pcap/vxlan.pcap",
    "ndpi/pcap/telegram.pcap",
    "ndpi/pcap/dlt_ppp.pcap",  # PPP
    "zeek/traces/mixed-vlan-mpls.pcap",  # VLAN + MPLS
    "zeek/traces/q-in-q.pcap",
    "zeek/traces/ipv6-http-atomic-frag.pcap",
    "zeek/traces/icmp/icmp-destunreach-udp.pcap",
    "zeek/traces/pcapng-multi-interface.pcapng",
    "attacks/esnet/tcp/control/two_way_all_flags.pcap",  # every TCP flag combination
    "attacks/stopddos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng",  # ECE/CWR
    "attacks/pcaphunt/hs-sh-IPscan.pcapng",  # IP protocol scan: every protocol number
    "attacks/slips/test12-icmp-portscan.pcap",
]
ORACLE_MAX_PACKETS = 600
IP_DECODED = (M.BAD_IP_LENGTH, M.TRUNCATED_EXT_HEADER, M.TRUNCATED_TRANSPORT)
IP_KEYS = ("ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "ttl")


@pytest.mark.parametrize("name", ORACLE_SAMPLE)
def test_decoded_fields_equal_scapy_dissection(data_dir, name):
    source = open_source(data_dir / name, batch_size=ORACLE_MAX_PACKETS)
    chunk = next(source._capture.chunks(ORACLE_MAX_PACKETS))  # the same frames the first batch holds
    batch = next(iter(source))
    compared = 0
    firsts = np.flatnonzero(frame_rows(batch))  # UDP tunnels add inner rows after their frame's row
    assert len(firsts) == len(chunk)
    for i, row in enumerate(batch):
        f = np.searchsorted(firsts, i, side="right") - 1
        frame = chunk.buf[chunk.offsets[f]: chunk.offsets[f] + chunk.caplens[f]].tobytes()
        exps = expected_rows(frame, int(row["linktype"]))
        exp = exps[i - firsts[f]] if i - firsts[f] < len(exps) else None
        if row["malformed"] == M.OK:
            assert exp is not None, f"packet {i}: decoded as IP, scapy finds no IP"
            got = {k: int(row[k]) for k in exp}
            assert got == {k: int(v) for k, v in exp.items()}, f"packet {i}"
            compared += 1
        elif exp is not None:
            # scapy dissects without length checks: where we stop after the IP header (impossible lengths,
            # transport header outside the IP payload), the IP-level fields must still agree.
            assert row["malformed"] in IP_DECODED, f"packet {i}"
            assert {k: int(row[k]) for k in IP_KEYS} == {k: int(exp[k]) for k in IP_KEYS}, f"packet {i}"
    assert compared >= min(len(batch), ORACLE_MAX_PACKETS) * 0.5


# -------------------------------------------------------------------------------------------- link types

LINK_CASES = {
    "ethernet": (1, bytes(Ether() / TCP4)),
    "sll": (113, bytes(CookedLinux(proto=0x0800) / TCP4)),
    "sll2": (276, bytes(CookedLinuxV2(proto=0x86DD) / TCP6)),
    "raw-v4": (101, bytes(TCP4)),
    "raw-v6": (101, bytes(TCP6)),
    "raw-12": (12, bytes(TCP4)),
    "raw-14": (14, bytes(TCP6)),
    "ipv4": (228, bytes(TCP4)),
    "ipv6": (229, bytes(TCP6)),
    "null-le-v4": (0, struct.pack("<I", 2) + bytes(TCP4)),
    "null-be-v4": (0, struct.pack(">I", 2) + bytes(TCP4)),
    "null-linux-v6": (0, struct.pack("<I", 10) + bytes(TCP6)),
    "null-bsd-v6": (0, struct.pack("<I", 24) + bytes(TCP6)),
    "null-freebsd-v6": (0, struct.pack(">I", 28) + bytes(TCP6)),
    "null-darwin-v6": (0, struct.pack("<I", 30) + bytes(TCP6)),
    "loop-v4": (108, struct.pack(">I", 2) + bytes(TCP4)),
    "loop-v6": (108, struct.pack(">I", 24) + bytes(TCP6)),
    "ppp": (9, b"\xff\x03" + bytes(PPP(proto=0x0021) / TCP4)),
    "ppp-no-address": (9, bytes(PPP(proto=0x0021) / TCP4)),
    "ppp-unframed": (9, b"\x00\x57" + bytes(TCP6)),
    "c_hdlc": (104, b"\x0f\x00\x08\x00" + bytes(TCP4)),
}


@pytest.mark.parametrize("case", LINK_CASES)
def test_link_types(case):
    linktype, frame = LINK_CASES[case]
    row = one(frame, linktype)
    assert row["malformed"] == M.OK
    inner = TCP4 if row["ip_version"] == 4 else TCP6
    assert row["ip_version"] == inner.version
    assert (row["sport"], row["dport"]) == (inner[TCP].sport, inner[TCP].dport)
    assert halves_to_addr(row["src_hi"], row["src_lo"]) == inner.src
    assert row["payload_len"] == len(inner[TCP].payload)
    assert row["ethertype"] == (0x0800 if inner.version == 4 else 0x86DD)
    assert row["linktype"] == linktype


def test_ethernet_frame_matches_scapy_field_by_field():
    frame = bytes(Ether() / TCP4)
    row = one(frame)
    assert_matches_scapy(row, frame, 1)
    assert row["tcp_flags"] == TCP_SYN | TCP_ACK and row["tcp_urp"] == 5 and row["tcp_win"] == 999


@pytest.mark.parametrize("linktype", [119, 192, 147])
def test_unknown_link_types_are_kept_and_marked(linktype):
    row = one(b"\x00" * 60, linktype)
    assert row["malformed"] == M.UNKNOWN_LINKTYPE and row["ip_version"] == 0 and row["caplen"] == 60


def test_mixed_link_types_in_one_batch_equal_single_decodes():
    cases = list(LINK_CASES.values()) + [(119, b"\x00" * 30), (1, bytes(Ether() / ARP()))]
    batch = decode(*(f for _, f in cases), linktype=[lt for lt, _ in cases])
    for i, (lt, frame) in enumerate(cases):
        single = one(frame, lt)
        for name in PACKET_DTYPE.names:
            if name != "ts_ns":
                assert batch[i][name] == single[name], (i, name)


# ---------------------------------------------------------------------------------------- encapsulations

ENCAP_CASES = {
    "vlan": (Ether() / Dot1Q(vlan=42) / TCP4, 42),
    "vlan-prio-tag-then-vlan": (Ether() / Dot1Q(vlan=0) / Dot1Q(vlan=9) / TCP4, 0),
    "qinq-88a8": (Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / TCP6, 100),
    "qinq-9100": (Ether(type=0x9100) / Dot1Q(vlan=300) / Dot1Q(vlan=7) / TCP4, 300),
    "mpls-stack-v4": (Ether() / MPLS(label=16, s=0) / MPLS(label=17, s=1) / TCP4, 0),
    "mpls-v6": (Ether() / MPLS(label=16, s=1) / TCP6, 0),
    "vlan-mpls": (Ether() / Dot1Q(vlan=5) / MPLS(label=3, s=1) / TCP4, 5),
    "pppoe-v4": (Ether() / PPPoE() / PPP(proto=0x0021) / TCP4, 0),
    "qinq-pppoe-v6": (Ether() / Dot1AD(vlan=757) / Dot1Q(vlan=1) / PPPoE() / PPP(proto=0x0057) / TCP6, 757),
}


@pytest.mark.parametrize("case", ENCAP_CASES)
def test_encapsulations(case):
    pkt, vlan = ENCAP_CASES[case]
    frame = bytes(pkt)
    row = one(frame)
    assert row["malformed"] == M.OK
    assert row["vlan_id"] == vlan
    inner = pkt[IPv6] if pkt.haslayer(IPv6) else pkt[IP]
    assert row["ip_version"] == inner.version and row["dport"] == inner[TCP].dport
    assert row["payload_len"] == len(inner[TCP].payload)


@pytest.mark.parametrize("pkt, ethertype", [
    (Ether() / ARP(), 0x0806),
    (Ether() / Dot1Q(vlan=3) / ARP(), 0x0806),
    (Ether() / PPPoE() / PPP(proto=0xC021) / b"lcp-stuff", 0),
    (Ether(type=0x88CC) / (b"lldp" * 10), 0x88CC),
    (Ether(type=60) / (b"\xaa\xaa\x03" + b"\0" * 50), 0),  # 802.3 length field + LLC
    (Ether() / MPLS(s=1) / (b"\x00" * 40), 0),  # pseudowire control word: not IP
])
def test_non_ip_frames(pkt, ethertype):
    row = one(bytes(pkt))
    assert row["malformed"] == M.NON_IP and row["ip_version"] == 0 and row["ethertype"] == ethertype


def test_too_deep_encapsulation_stack():
    pkt = Ether()
    for _ in range(MAX_ENCAP_LAYERS + 1):
        pkt = pkt / Dot1Q(vlan=1)
    assert one(bytes(pkt / TCP4))["malformed"] == M.TRUNCATED_LINK
    ok = Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / TCP4
    assert one(bytes(ok))["malformed"] == M.OK


# ------------------------------------------------------------------------------- tunnels and 802.11 links

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would ARP for a dst MAC
OUTER4 = IP(src="192.0.2.1", dst="192.0.2.2", ttl=9)
OUTER6 = IPv6(src="2001:db8:f::1", dst="2001:db8:f::2")
INNER_UDP4 = IP(src="10.0.0.1", dst="10.0.0.2", ttl=77) / UDP(sport=1234, dport=53) / b"dns?"
# GRE and IP-in-IP: the inner packet replaces the outer row (Zeek logs no connection for the outer IP flow).
REPLACING_TUNNELS = {
    "gre-ipv4": (ETH / OUTER4 / GRE() / TCP4, TUNNEL_GRE),
    "gre-key-seq-csum-ipv6": (ETH / OUTER4 / GRE(chksum_present=1, key_present=1, seqnum_present=1, key=7)
                              / TCP6, TUNNEL_GRE),
    "gre-over-ipv6": (ETH / OUTER6 / GRE() / TCP4, TUNNEL_GRE),
    "gre-teb-vlan": (ETH / OUTER4 / GRE(proto=0x6558) / ETH / Dot1Q(vlan=42) / INNER_UDP4, TUNNEL_GRE),
    "erspan-i": (ETH / OUTER4 / GRE() / ERSPAN_I() / ETH / TCP4, TUNNEL_GRE),
    "erspan-ii": (ETH / OUTER4 / GRE(seqnum_present=1) / ERSPAN_II(vlan=5) / ETH / TCP4, TUNNEL_GRE),
    "erspan-iii": (ETH / OUTER4 / GRE() / ERSPAN_III() / ETH / TCP6, TUNNEL_GRE),
    "erspan-iii-platform": (ETH / OUTER4 / GRE() / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific() / Ether()
                            / TCP4, TUNNEL_GRE),
    "pptp": (ETH / OUTER4 / GRE_PPTP(seqnum_present=1) / PPP(b"\xff\x03\x00\x21" + bytes(INNER_UDP4)),
             TUNNEL_GRE),
    "4in4": (ETH / IP(src="192.0.2.1", dst="192.0.2.2", proto=4) / TCP4, TUNNEL_IPIP),
    "6in4": (ETH / IP(src="192.0.2.1", dst="192.0.2.2", proto=41) / TCP6, TUNNEL_IPIP),
    "4in6": (ETH / IPv6(src="2001:db8:f::1", dst="2001:db8:f::2", nh=4) / TCP4, TUNNEL_IPIP),
    "vlan-outer-gre": (ETH / Dot1Q(vlan=9) / OUTER4 / GRE() / TCP4, TUNNEL_GRE),
}


@pytest.mark.parametrize("case", REPLACING_TUNNELS, ids=str)
def test_gre_and_ip_in_ip_rows_are_the_inner_packet(case):
    pkt, bit = REPLACING_TUNNELS[case]
    frame = bytes(pkt)
    batch = decode(frame)
    assert len(batch) == 1 and batch[0]["malformed"] == M.OK and batch[0]["tunnel"] == bit
    assert batch[0]["caplen"] == len(frame)  # the frame's capture fields stay
    assert batch[0]["sport"] in (40000, 1, 1234)
    assert_matches_scapy(batch[0], frame, 1)  # the oracle follows the tunnel independently


# UDP tunnels: the outer UDP row stays (Zeek logs that flow too) and the inner packet's row follows it.
UDP_TUNNEL_CASES = {
    "gtp-u": (ETH / OUTER4 / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=5) / TCP4, TUNNEL_GTP),
    "gtp-u-ipv6-inner": (ETH / OUTER4 / UDP(sport=2152, dport=2152) / GTP_U_Header() / TCP6, TUNNEL_GTP),
    "gtp-u-ext-header": (ETH / OUTER4 / UDP(sport=2152, dport=2152) / GTP_U_Header(E=1, next_ex=0x85)
                         / GTPPDUSessionContainer(type=1, QFI=3) / INNER_UDP4, TUNNEL_GTP),
    "vxlan": (ETH / OUTER4 / UDP(sport=40000, dport=4789) / VXLAN(vni=10) / ETH / TCP4, TUNNEL_VXLAN),
    "vxlan-over-ipv6": (ETH / OUTER6 / UDP(sport=4789, dport=4789) / VXLAN() / ETH / TCP6,
                        TUNNEL_VXLAN),
}


@pytest.mark.parametrize("case", UDP_TUNNEL_CASES, ids=str)
def test_udp_tunnels_add_the_inner_row_after_the_outer_row(case):
    pkt, bit = UDP_TUNNEL_CASES[case]
    frame = bytes(pkt)
    batch = decode(bytes(ETH / TCP4), frame, bytes(ETH / TCP6))
    assert len(batch) == 4 and frame_rows(batch).tolist() == [True, True, False, True]
    assert batch["ts_ns"].tolist() == [0, 1, 1, 2] and (batch["malformed"] == M.OK).all()
    outer, inner = batch[1], batch[2]
    assert outer["proto"] == 17 and outer["tunnel"] == 0 and inner["tunnel"] == bit
    rows = expected_rows(frame, 1)
    assert len(rows) == 2
    for row, exp in zip((outer, inner), rows):
        assert {k: int(row[k]) for k in exp} == {k: int(v) for k, v in exp.items()}


def test_tunnels_not_unwrapped_keep_the_outer_row():
    cases = [ETH / OUTER4 / GRE(proto=0x880B) / (b"x" * 20),  # PPP in GRE version 0: not a Zeek tunnel
             ETH / OUTER4 / UDP(sport=1, dport=2152) / GTP_U_Header(gtp_type=1) / b"echo",  # not a T-PDU
             ETH / OUTER4 / UDP(sport=1, dport=4789) / VXLAN(flags=0) / ETH / TCP4]  # no I flag
    batch = decode(*(bytes(p) for p in cases))
    assert len(batch) == 3 and (batch["tunnel"] == 0).all() and (batch["malformed"] == M.OK).all()
    assert batch["proto"].tolist() == [47, 17, 17]


def test_tunnel_depth_is_limited_as_zeek_does():
    nested = ETH / IP(src="1.1.1.1", dst="2.2.2.2") / IP(src="3.3.3.3", dst="4.4.4.4") / \
        IP(src="5.5.5.5", dst="6.6.6.6") / TCP4
    row = one(bytes(nested))
    assert row["tunnel"] == TUNNEL_IPIP and row["proto"] == 4  # two levels unwrapped, the third stays
    assert halves_to_addr(row["src_hi"], row["src_lo"]) == "5.5.5.5"


def test_gtp_inside_gre_marks_both_tunnels():
    frame = bytes(ETH / OUTER4 / GRE() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=2152, dport=2152)
                  / GTP_U_Header() / TCP4)
    batch = decode(frame)
    assert batch["tunnel"].tolist() == [TUNNEL_GRE, TUNNEL_GRE | TUNNEL_GTP]
    assert batch["proto"].tolist() == [17, 6] and frame_rows(batch).tolist() == [True, False]


@pytest.mark.parametrize("case", [*REPLACING_TUNNELS.values(), *UDP_TUNNEL_CASES.values()],
                         ids=[*REPLACING_TUNNELS, *UDP_TUNNEL_CASES])
def test_tunnel_truncation_at_every_byte(case):
    frame = bytes(case[0])
    cuts = [frame[:k] for k in range(len(frame))]
    batch = decode(*cuts)  # one batch: rows of different frames must not mix
    assert frame_rows(batch).sum() == len(cuts)
    assert set(batch["malformed"].tolist()) <= {int(m) for m in M if m not in (M.UNKNOWN_LINKTYPE, M.BAD_RECORD)}
    full = decode(frame)
    assert (full["malformed"] == M.OK).all()


DOT11_IP = LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x0800) / INNER_UDP4
WLAN_CASES = {
    "data": (Dot11(type=2, subtype=0, FCfield=1) / DOT11_IP, M.OK),
    "qos-data": (Dot11(type=2, subtype=8, FCfield=2) / Dot11QoS() / DOT11_IP, M.OK),
    "four-address": (Dot11(type=2, subtype=0, FCfield=3, addr4="00:11:22:33:44:55") / DOT11_IP,
                     M.OK),
    "ipv6": (Dot11(type=2) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x86DD) / TCP6, M.OK),
    "beacon": (Dot11(type=0, subtype=8) / (b"\0" * 40), M.NON_IP),
    "null-data": (Dot11(type=2, subtype=4) / (b"\0" * 10), M.NON_IP),
    "protected-qos": (Dot11(type=2, subtype=8, FCfield=0x40) / Dot11QoS() / DOT11_IP, M.NON_IP),
    "arp": (Dot11(type=2) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x0806) / ARP(), M.NON_IP),
}


@pytest.mark.parametrize("case", WLAN_CASES, ids=str)
@pytest.mark.parametrize("radiotap", [False, True], ids=["802.11", "radiotap"])
def test_802_11_and_radiotap(case, radiotap):
    pkt, reason = WLAN_CASES[case]
    frame, linktype = (bytes(RadioTap() / pkt), 127) if radiotap else (bytes(pkt), 105)
    row = one(frame, linktype)
    assert row["malformed"] == reason
    if reason == M.OK:
        assert_matches_scapy(row, frame, linktype)


def test_802_11_truncation_at_every_byte():
    frame = bytes(RadioTap() / WLAN_CASES["qos-data"][0])
    codes = decode(*(frame[:k] for k in range(len(frame))), linktype=127)["malformed"]
    rt = len(bytes(RadioTap()))
    assert (codes[: rt + 26 + 8] == M.TRUNCATED_LINK).all()  # radiotap, 802.11 QoS, LLC/SNAP headers
    assert (codes[rt + 34: rt + 54] == M.TRUNCATED_IP).all()  # a 20-byte IPv4 header follows
    assert (codes[rt + 54:] == M.BAD_IP_LENGTH).all()  # its total length is beyond the cut frame


# --------------------------------------------------------------------------------------- IP and transport

def test_ipv4_options_and_icmp():
    pkt = Ether() / IP(src="1.2.3.4", dst="5.6.7.8", options=b"\x01\x01\x01\x00" * 2) / ICMP(type=3, code=1) / (
        b"z" * 12)
    frame = bytes(pkt)
    row = one(frame)
    assert_matches_scapy(row, frame, 1)
    assert (row["icmp_type"], row["icmp_code"], row["payload_len"], row["sport"]) == (3, 1, 12, 0)


@pytest.mark.parametrize("chain", [
    [IPv6ExtHdrHopByHop()],
    [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["2001:db8::9"]), IPv6ExtHdrDestOpt()],
    [IPv6ExtHdrDestOpt(), IPv6ExtHdrFragment(offset=0, m=1, id=0xABCDEF01)],
    [IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(offset=0, m=0, id=5), IPv6ExtHdrDestOpt()],  # atomic fragment
])
@pytest.mark.parametrize("upper", [TCP(sport=5, dport=6, flags="S") / b"abc", UDP(sport=7, dport=8) / b"abcd",
                                   ICMPv6EchoRequest(id=1, seq=2, data=b"ping")])
def test_ipv6_extension_chains(chain, upper):
    pkt = IPv6(src="2001:db8::a", dst="ff02::1")
    for hdr in chain:
        pkt = pkt / hdr
    pkt = Ether() / pkt / upper
    frame = bytes(pkt)
    row = one(frame)
    assert row["malformed"] == M.OK
    assert_matches_scapy(row, frame, 1)
    assert row["proto"] == {TCP: 6, UDP: 17}.get(type(upper), 58)
    assert row["is_fragment"] == int(any(isinstance(h, IPv6ExtHdrFragment) for h in chain))


def test_ipv6_non_first_fragment_has_no_transport_header():
    frame = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(
        nh=17, offset=100, m=1, id=99) / (b"\xff" * 24))
    row = one(frame)
    assert row["malformed"] == M.OK
    assert (row["proto"], row["sport"], row["dport"], row["payload_len"]) == (17, 0, 0, 24)
    assert (row["frag_offset"], row["frag_mf"], row["frag_id"], row["is_fragment"]) == (800, 1, 99, 1)


@pytest.mark.parametrize("flags, frag, expect_ports", [("MF", 0, True), ("MF", 185, False), (0, 185, False),
                                                       ("DF", 0, True)])
def test_ipv4_fragments(flags, frag, expect_ports):
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=4242, flags=flags, frag=frag, proto=17) / (
        bytes(UDP(sport=1000, dport=2000)) + b"d" * 32)
    row = one(bytes(Ether() / pkt))
    assert row["malformed"] == M.OK
    assert (row["frag_id"], row["frag_offset"], row["proto"]) == (4242, frag * 8, 17)
    assert row["frag_mf"] == int(flags == "MF") and row["frag_df"] == int(flags == "DF")
    assert row["is_fragment"] == int(flags == "MF" or frag > 0)
    assert (row["dport"] == 2000) == expect_ports
    assert row["payload_len"] == (32 if expect_ports else 40)


def test_tso_zero_ip_length_takes_the_frame_length():
    frame = bytearray(bytes(Ether() / TCP4))
    frame[16:18] = b"\0\0"
    row = one(bytes(frame))
    assert row["malformed"] == M.OK and row["ip_len"] == len(TCP4) and row["payload_len"] == 10


@pytest.mark.parametrize("mutate, reason", [
    (lambda f: f.__setitem__(14, 0x55), M.TRUNCATED_IP),  # version 5
    (lambda f: f.__setitem__(14, 0x44), M.TRUNCATED_IP),  # IHL 4 < 5
    (lambda f: f.__setitem__(slice(16, 18), b"\x00\x10"), M.BAD_IP_LENGTH),  # total length 16 < header
    (lambda f: f.__setitem__(slice(16, 18), b"\x05\xdc"), M.BAD_IP_LENGTH),  # 1500 > frame
    (lambda f: f.__setitem__(46, 0x40), M.TRUNCATED_TRANSPORT),  # TCP data offset 16 < 20
    (lambda f: f.__setitem__(46, 0xF0), M.TRUNCATED_TRANSPORT),  # data offset 60 > IP payload
])
def test_broken_headers(mutate, reason):
    frame = bytearray(bytes(Ether() / TCP4))
    mutate(frame)
    row = one(bytes(frame))
    assert row["malformed"] == reason
    if reason != M.TRUNCATED_IP:
        assert halves_to_addr(row["src_hi"], row["src_lo"]) == "10.1.2.3"  # fields decoded so far stay


def test_snaplen_cut_payload_is_not_malformed():
    frame = bytes(Ether() / TCP4)
    row = one(frame[:54], wirelens=[len(frame)])
    assert row["malformed"] == M.OK and row["payload_len"] == 10 and row["caplen"] == 54


# ------------------------------------------------------------------------------- truncation at every byte

def _boundaries(pkt) -> list[tuple[int, Malformed]]:
    """(first byte offset of a header, reason when the frame ends before that header is complete)."""
    out, layer, at = [], pkt, 0
    while layer is not None and layer.name != "Raw" and len(layer):
        size = len(layer) - len(layer.payload)
        if isinstance(layer, (IP, IPv6)):
            reason = M.TRUNCATED_IP
        elif isinstance(layer, (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment)):
            reason = M.TRUNCATED_EXT_HEADER
        elif isinstance(layer, (TCP, UDP, ICMP, ICMPv6EchoRequest)):
            reason, size = M.TRUNCATED_TRANSPORT, {TCP: 20}.get(type(layer), 8)
        else:
            reason = M.TRUNCATED_LINK
        out.append((at + size, reason))
        at += size
        layer = layer.payload if layer.payload else None
    return out


TRUNCATION_CASES = [
    (1, Ether() / Dot1Q(vlan=2) / TCP4),
    (1, Ether() / Dot1AD(vlan=2) / Dot1Q(vlan=3) / PPPoE() / PPP(proto=0x21) / IP() / ICMP() / (b"p" * 4)),
    (1, Ether() / MPLS(s=0) / MPLS(s=1) / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / UDP() / b"u"),
    (113, CookedLinux(proto=0x86DD) / IPv6() / IPv6ExtHdrRouting(addresses=["::1"]) / ICMPv6EchoRequest()),
    (276, CookedLinuxV2(proto=0x0800) / IP(options=b"\x01" * 8) / UDP() / b"xyz"),
]


@pytest.mark.parametrize("linktype, pkt", TRUNCATION_CASES)
def test_truncation_at_every_byte(linktype, pkt):
    frame = bytes(pkt)
    bounds = _boundaries(pkt)
    cuts = [frame[:n] for n in range(len(frame) + 1)]
    batch = decode(*cuts, linktype=linktype, wirelens=[len(frame)] * len(cuts))
    for n, row in enumerate(batch):
        want = next((reason for end, reason in bounds if n < end), M.OK)
        assert row["malformed"] == want, f"cut at {n} bytes"


@pytest.mark.parametrize("case, link_len", [("null-le-v4", 4), ("loop-v6", 4), ("raw-v4", 0), ("raw-v6", 0),
                                             ("ipv4", 0), ("ipv6", 0), ("ppp", 4), ("ppp-no-address", 2),
                                             ("ppp-unframed", 2),
                                             ("c_hdlc", 4), ("sll", 16), ("sll2", 20)])
def test_truncation_of_every_link_type(case, link_len):
    linktype, frame = LINK_CASES[case]
    ip_len = 20 if frame[link_len] >> 4 == 4 else 40
    batch = decode(*(frame[:n] for n in range(len(frame) + 1)), linktype=linktype,
                   wirelens=[len(frame)] * (len(frame) + 1))
    for n, row in enumerate(batch):
        want = (M.TRUNCATED_LINK if n < link_len else M.TRUNCATED_IP if n < link_len + ip_len
                else M.TRUNCATED_TRANSPORT if n < link_len + ip_len + 20 else M.OK)
        assert row["malformed"] == want, f"cut at {n} bytes"


# ---------------------------------------------------------------------------------------- whole corpus

def _corpus(data_dir: Path) -> list[Path]:
    files = [p for p in (data_dir / "ndpi" / "pcap").iterdir() if p.is_file()]
    return sorted(files) + sorted(p for p in (data_dir / "zeek" / "traces").rglob("*") if p.is_file())


def test_whole_corpus_decodes_without_exception(data_dir):
    rows = errors = 0
    skips: dict[str, int] = {}
    for path in _corpus(data_dir):
        try:
            source = open_source(path)
        except CaptureError as exc:
            assert "\n" not in str(exc)
            errors += 1
            continue
        for batch in source:
            assert batch.dtype == PACKET_DTYPE
            rows += len(batch)
        for reason, n in source.skips.items():
            skips[reason] = skips.get(reason, 0) + n
    assert errors == 1  # ndpi/pcap/README.txt
    assert rows > 100_000
    # The deliberately broken captures show up as counted skips of several kinds.
    assert {"bad_ip_length", "truncated_ip", "truncated_transport", "bad_record:header",
            "unknown_linktype:192"} <= set(skips)
