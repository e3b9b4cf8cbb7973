"""Capture statistics over packet batches: what ``netwarden stats`` prints, reused for live capture.

Accumulates with a few ``np.bincount`` calls per batch, so it costs next to nothing beside decoding; the
counts answer the first questions an operator has about a capture (what link, how much IPv6, how much is
broken, over what time span).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np

from sensor.decode import ETH_ARP, LINKTYPE_NAMES
from sensor.packets import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TUNNEL_GRE, TUNNEL_GTP,
                            TUNNEL_IPIP, TUNNEL_VXLAN, Malformed, frame_rows)

TRANSPORT_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmpv6"}
TUNNEL_NAMES = {TUNNEL_GRE: "gre", TUNNEL_IPIP: "ip_in_ip", TUNNEL_GTP: "gtp", TUNNEL_VXLAN: "vxlan"}
# Rows that reached the IP layer: their proto is meaningful even if a later layer was malformed.
_IP_DECODED = (Malformed.OK, Malformed.BAD_IP_LENGTH, Malformed.TRUNCATED_EXT_HEADER,
               Malformed.TRUNCATED_TRANSPORT)


def linktype_name(code: int) -> str:
    return LINKTYPE_NAMES.get(code, f"linktype_{code}")


class CaptureStats:
    """Running totals over batches; ``to_dict()`` is the JSON summary."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes_wire = 0
        self.bytes_captured = 0
        self.linktypes: Counter[int] = Counter()
        self.interfaces: Counter[int] = Counter()
        self.network: Counter[str] = Counter()
        self.transport: Counter[int] = Counter()
        self.skipped: Counter[str] = Counter()
        self.tunneled: Counter[str] = Counter()  # packets found inside each tunnel type
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def update(self, batch: np.ndarray) -> None:
        if not len(batch):
            return
        tunnel = batch["tunnel"]
        if tunnel.any():
            self.tunneled.update({name: int(np.count_nonzero(tunnel & bit)) for bit, name in TUNNEL_NAMES.items()})
            # Inner rows of UDP tunnels are not frames: the frame is counted by its outer UDP row. (A GRE or
            # IP-in-IP frame's one row describes the inner packet, so it counts under the inner protocols.)
            batch = batch[frame_rows(batch)]
        self.packets += len(batch)
        self.bytes_wire += int(batch["wirelen"].sum(dtype=np.int64))
        self.bytes_captured += int(batch["caplen"].sum(dtype=np.int64))
        self.linktypes.update(_count(batch["linktype"]))
        self.interfaces.update(_count(batch["link_id"]))
        version = batch["ip_version"]
        n4, n6 = int((version == 4).sum()), int((version == 6).sum())
        n_arp = int(((version == 0) & (batch["ethertype"] == ETH_ARP)).sum())
        self.network.update({"ipv4": n4, "ipv6": n6, "arp": n_arp, "other": len(batch) - n4 - n6 - n_arp})
        decoded = np.isin(batch["malformed"], _IP_DECODED) & (version > 0)
        self.transport.update(_count(batch["proto"][decoded]))
        ts = batch["ts_ns"]
        ts = ts[ts > 0]  # pcapng simple packet blocks carry no timestamp
        if len(ts):
            lo, hi = int(ts.min()), int(ts.max())
            self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
            self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def add_skips(self, counter: Counter) -> None:
        self.skipped.update(counter)

    def merge(self, other: CaptureStats) -> None:
        """Fold another summary in (the ``total`` of several inputs)."""
        self.packets += other.packets
        self.tunneled.update(other.tunneled)
        self.bytes_wire += other.bytes_wire
        self.bytes_captured += other.bytes_captured
        for mine, theirs in ((self.linktypes, other.linktypes), (self.interfaces, other.interfaces),
                             (self.network, other.network),
                             (self.transport, other.transport), (self.skipped, other.skipped)):
            mine.update(theirs)
        stamps = [t for t in (self.first_ns, other.first_ns) if t is not None]
        self.first_ns = min(stamps) if stamps else None
        stamps = [t for t in (self.last_ns, other.last_ns) if t is not None]
        self.last_ns = max(stamps) if stamps else None

    def to_dict(self) -> dict:
        duration = (self.last_ns - self.first_ns) / 1e9 if self.first_ns is not None else 0.0
        return {
            "packets": self.packets,
            "bytes": self.bytes_wire,
            "bytes_captured": self.bytes_captured,
            "linktypes": _sorted({linktype_name(k): v for k, v in self.linktypes.items()}),
            "interfaces": {str(k): v for k, v in sorted(self.interfaces.items())},
            "network": _sorted({k: v for k, v in self.network.items() if v}),
            "transport": _sorted({TRANSPORT_NAMES.get(k, str(k)): v for k, v in self.transport.items()}),
            "tunneled": _sorted({k: v for k, v in self.tunneled.items() if v}),
            "skipped": _sorted(dict(self.skipped)),
            "skipped_total": sum(self.skipped.values()),
            "first_ts": _iso(self.first_ns),
            "last_ts": _iso(self.last_ns),
            "first_epoch": self.first_ns / 1e9 if self.first_ns is not None else None,
            "last_epoch": self.last_ns / 1e9 if self.last_ns is not None else None,
            "duration_s": round(duration, 6),
            "pps": round(self.packets / duration, 3) if duration > 0 else None,
            "bps": round(self.bytes_wire * 8 / duration, 3) if duration > 0 else None,
        }


def _count(values: np.ndarray) -> dict[int, int]:
    """Value -> count for small unsigned ints (link types, protocol numbers): bincount beats unique here."""
    if not len(values):
        return {}
    counts = np.bincount(values)
    nz = np.flatnonzero(counts)
    return dict(zip(nz.tolist(), counts[nz].tolist()))


def _sorted(d: dict) -> dict:
    """Largest first, so the JSON reads as a ranking."""
    return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    try:
        dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None  # a fuzzed timestamp beyond year 9999: the epoch figure still shows it
    return dt.replace(microsecond=(ns // 1000) % 1_000_000).isoformat().replace("+00:00", "Z")
