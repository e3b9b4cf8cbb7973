"""Connection records: what the tracker emits and what a Zeek conn.log holds.

Field names and meanings follow Zeek's conn.log where they overlap (``uid``, ``community_id``,
``conn_state``, ``history``, ``orig_bytes`` ...) so users' Zeek tooling reads our output, and so a Zeek
conn.log read back in becomes the same records the packet tracker produces. The KDD-only columns
(``wrong_fragment``, ``urgent``, ``kdd_service``) sit beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ConnectionRecord:
    ts: float  # first packet, seconds since the epoch
    uid: str  # Zeek-style unique id ("C" + base62)
    orig_h: str  # id.orig_h
    orig_p: int  # id.orig_p (ICMP: type, as Zeek)
    resp_h: str  # id.resp_h
    resp_p: int  # id.resp_p (ICMP: code, as Zeek)
    proto: str  # "tcp" | "udp" | "icmp" (ICMPv6 too, as Zeek) | other protocol number as text
    duration: float  # last packet - first packet, seconds
    orig_bytes: int  # payload bytes (TCP: from sequence numbers)
    resp_bytes: int
    conn_state: str  # Zeek conn_state = KDD flag
    history: str  # Zeek history letters, upper case = originator
    orig_pkts: int
    orig_ip_bytes: int
    resp_pkts: int
    resp_ip_bytes: int
    missed_bytes: int = 0
    service: str = "-"  # Zeek's application-protocol field; "-" where no analyzer decided
    community_id: str = "-"
    kdd_service: str = "other"  # KDD service vocabulary (port/ICMP-type based), see features.services
    wrong_fragment: int = 0
    urgent: int = 0  # packets with the URG flag
    end_ts: float = 0.0  # last packet (ts + duration); windows are ordered by this
    extra: dict[str, str] = field(default_factory=dict)  # extra conn.log columns (label, detailedlabel ...)

    @property
    def land(self) -> int:
        """KDD 'land': 1 if the connection is from/to the same host and port."""
        return int(self.orig_h == self.resp_h and self.orig_p == self.resp_p)
