"""Who is the originator: Zeek's ICMP type pairing and its likely-server-port role flip.

Zeek keys an ICMP "connection" by (type, counterpart type): an echo request (8) and its reply (0) map to
the same key, and Zeek reports the type in ``orig_p`` and the counterpart (or, for one-way messages, the
code) in ``resp_p``. One-way messages (unreachable, time exceeded ...) are never paired with the reverse
direction.

Zeek flips a new connection's roles when its first packet looks like it came from the server: for UDP when
the source port is a likely server port and the destination port is not (never toward a broadcast
address); for TCP only when the first packet is not a plain SYN. ``LIKELY_SERVER_PORTS`` is the set Zeek's
default (non-bare) scripts register; Zeek in bare mode (``-b``) knows fewer, see docs/connections.md.
"""

from __future__ import annotations

import numpy as np

# ICMPv4 request/reply pairs (ICMP4_counterpart) and ICMPv6 ones (ICMP6_counterpart).
_ICMP4_PAIRS = ((8, 0), (13, 14), (15, 16), (10, 9), (17, 18))
_ICMP6_PAIRS = ((128, 129), (133, 134), (135, 136), (130, 131), (139, 140), (144, 145))


def _table(pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """256-entry lookup: counterpart type, or -1 for a one-way type."""
    table = np.full(256, -1, dtype=np.int16)
    for a, b in pairs:
        table[a], table[b] = b, a
    return table


ICMP4_COUNTERPART = _table(_ICMP4_PAIRS)
ICMP6_COUNTERPART = _table(_ICMP6_PAIRS)

LIKELY_SERVER_PORTS: dict[int, frozenset[int]] = {
    6: frozenset({21, 22, 23, 25, 53, 80, 81, 88, 110, 111, 135, 139, 143, 389, 443, 445, 502, 587, 631, 636,
                  993, 995, 1080, 1433, 1883, 2049, 3128, 3306, 3389, 5060, 5222, 5269, 5432, 5900, 6379,
                  6666, 6667, 6668, 6669, 8000, 8080, 8443, 8888, 20000}),
    17: frozenset({53, 67, 69, 88, 111, 123, 137, 138, 161, 162, 443, 500, 514, 547, 1812, 1813, 2049, 2152,
                   3478, 3544, 4500, 4789, 5060, 5246, 5247, 5353, 5355, 6081}),
}

_BROADCAST_V4_LO = 0x0000FFFF_FFFFFFFF  # ::ffff:255.255.255.255 low half


def flip_new_connection(proto: int, sport: int, dport: int, flags_syn_only: bool, syn_ack: bool,
                        dst_hi: int, dst_lo: int) -> bool:
    """Whether the first packet's receiver is the originator (Zeek's WantConnection flip + SYN-ACK rule)."""
    if proto == 6:
        if syn_ack:
            return True  # we missed the SYN: the SYN-ACK's receiver opened the connection
        if flags_syn_only:
            return False
        servers = LIKELY_SERVER_PORTS[6]
        if sport in servers:
            return dport not in servers or sport < dport
        return False
    if proto == 17:
        servers = LIKELY_SERVER_PORTS[17]
        if dst_hi == 0 and dst_lo == _BROADCAST_V4_LO:
            return False
        return sport in servers and dport not in servers
    return False
