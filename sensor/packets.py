"""The packet-batch format: the one contract between packet sources and every later stage.

A source yields *batches*: numpy structured arrays with one row per captured frame and the fixed dtype
``PACKET_DTYPE`` below. Downstream stages (connection tracking, statistics) work on whole batches with
numpy, never on per-packet Python objects; that is what makes the pipeline fast enough for a gateway.

This module is a leaf: it imports nothing from netwarden, so ``features``, ``models`` and ``agent`` may
import it without pulling in the sensor wiring.

Addresses: IPv4 and IPv6 share one representation, 128 bits split into two big-endian halves
(``src_hi``/``src_lo``); IPv4 is stored IPv4-mapped (``::ffff:a.b.c.d``), as the kernel does for dual-stack
sockets. Two uint64 columns group, sort and compare with plain numpy, unlike bytes columns.
"""

from __future__ import annotations

import enum
import ipaddress

import numpy as np

PACKET_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),  # capture timestamp, nanoseconds since the epoch
        ("link_id", "<u2"),  # interface index within the source (pcapng IDB index, 0 for pcap/live)
        ("linktype", "<u2"),  # DLT/LINKTYPE of the frame's interface
        ("caplen", "<u4"),  # bytes captured
        ("wirelen", "<u4"),  # bytes on the wire (orig_len)
        ("vlan_id", "<u2"),  # outermost 802.1Q/QinQ VLAN id, 0 if none
        ("ip_version", "u1"),  # 4, 6, or 0 for non-IP frames (ARP, LLDP, ...)
        ("proto", "u1"),  # IP protocol number after IPv6 extension headers (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)
        ("src_hi", "<u8"),
        ("src_lo", "<u8"),
        ("dst_hi", "<u8"),
        ("dst_lo", "<u8"),
        ("sport", "<u2"),  # TCP/UDP ports; 0 for other protocols
        ("dport", "<u2"),
        ("ip_len", "<u4"),  # IP total length (IPv6: payload length + 40)
        ("payload_len", "<u4"),  # transport payload length derived from the IP lengths (not the capture)
        ("ttl", "u1"),  # IPv4 TTL / IPv6 hop limit
        ("frag_id", "<u4"),  # IPv4 identification or IPv6 fragment-header identification
        ("frag_offset", "<u2"),  # fragment offset in bytes
        ("frag_mf", "u1"),  # more-fragments bit
        ("frag_df", "u1"),  # don't-fragment bit (IPv4 only)
        ("is_fragment", "u1"),  # 1 if offset > 0 or MF set (IPv4) / fragment header present (IPv6)
        ("tcp_flags", "<u2"),  # 9 TCP flag bits: FIN SYN RST PSH ACK URG ECE CWR NS
        ("tcp_seq", "<u4"),
        ("tcp_ack", "<u4"),
        ("tcp_win", "<u2"),
        ("tcp_urp", "<u2"),  # TCP urgent pointer
        ("icmp_type", "u1"),  # ICMP / ICMPv6 type and code
        ("icmp_code", "u1"),
        ("malformed", "u1"),  # Malformed reason code; 0 = decoded cleanly
        ("ethertype", "<u2"),  # innermost EtherType after VLAN/MPLS/PPPoE (0x0800, 0x86DD, 0x0806 ARP ...);
        # raw-IP/loopback links get the IP one; 0 for LLC frames, non-IP PPP or frames not decoded that far
        ("tunnel", "u1"),  # TUNNEL_* bits of the tunnels this row's packet was unwrapped from (0: not tunneled)
    ]
)

# TCP flag bits as they appear in ``tcp_flags``.
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR, TCP_NS = (1 << i for i in range(9))

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58

# Tunnel bits in ``tunnel``. As in Zeek, a GRE or IP-in-IP frame becomes one row for the *inner* packet
# (the outer IP flow is not a connection), while a UDP tunnel (GTP-U, VXLAN) keeps its outer UDP row and
# adds a row for the inner packet right after it: rows with a UDP-tunnel bit are extra rows, not frames.
TUNNEL_GRE, TUNNEL_IPIP, TUNNEL_GTP, TUNNEL_VXLAN = 1, 2, 4, 8
UDP_TUNNELS = TUNNEL_GTP | TUNNEL_VXLAN


def frame_rows(batch: np.ndarray) -> np.ndarray:
    """Boolean per row: the row is a captured frame (not an extra inner row of a UDP tunnel)."""
    return (batch["tunnel"] & UDP_TUNNELS) == 0

# IPv4-mapped IPv6 prefix in the high/low halves: hi == 0 and lo >> 32 == 0xFFFF.
V4_MAPPED_LO_PREFIX = np.uint64(0xFFFF) << np.uint64(32)


class Malformed(enum.IntEnum):
    """Why a frame was not fully decoded. Counted per reason by every source and logged once per reason."""

    OK = 0
    UNKNOWN_LINKTYPE = 1  # link type we do not decode (PPI, Prism, ...): frame skipped
    TRUNCATED_LINK = 2  # frame shorter than its link-layer header
    TRUNCATED_IP = 3  # IP header cut off or IHL/version invalid
    TRUNCATED_TRANSPORT = 4  # TCP/UDP/ICMP header cut off by the snap length
    BAD_IP_LENGTH = 5  # IP total length smaller than its header or larger than the frame on the wire
    TRUNCATED_EXT_HEADER = 6  # IPv6 extension-header chain cut off
    NON_IP = 7  # ARP, LLDP, ... : not an error, counted so nothing is lost silently
    BAD_RECORD = 8  # capture record with impossible lengths (incl_len > snaplen/file, absurd orig_len)


def empty_batch(n: int = 0) -> np.ndarray:
    """A zero-filled batch of ``n`` rows (helpers and tests build batches from it)."""
    return np.zeros(n, dtype=PACKET_DTYPE)


def addr_to_halves(addr: str) -> tuple[int, int]:
    """Text address -> (hi, lo) in the batch representation (IPv4 becomes IPv4-mapped)."""
    ip = ipaddress.ip_address(addr)
    value = int(ipaddress.IPv6Address(f"::ffff:{ip}")) if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def halves_to_addr(hi: int, lo: int) -> str:
    """(hi, lo) -> text address, IPv4-mapped shown as plain IPv4 (as Zeek and Suricata print it)."""
    ip = ipaddress.IPv6Address((int(hi) << 64) | int(lo))
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)
