"""IP fragment bookkeeping: KDD's ``wrong_fragment`` and the connection each fragment belongs to.

We do not reassemble payloads (the tracker reads headers only), but two things need the fragments:

- ``wrong_fragment`` counts fragments that are overlapping (their byte range intersects one already seen
  for the same datagram: the teardrop/"ping of death" family), oversized (offset + length beyond 65535),
  or malformed (a non-last fragment whose length is not a multiple of 8, or an empty fragment);
- a non-first fragment has no transport header, so its ports are unknown: it is attributed to the
  connection of its datagram's first fragment, keyed by (src, dst, proto, IP id). Zeek counts a
  reassembled datagram as one packet; the tracker therefore counts only the first fragment as a packet and
  adds the other fragments' bytes to it. A non-first fragment seen before its first fragment waits here
  (bounded; datagrams older than ``timeout`` are dropped and counted).

Fragments are rare, so this is per-fragment Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Datagram:
    first_row: tuple | None = None  # (sport, dport, icmp_type, icmp_code) of the first fragment
    ranges: list[tuple[int, int]] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)  # the same ranges, for the O(1) duplicate test
    high: int = 0  # highest end among ``ranges``: an in-order fragment starts there and overlaps none
    waiting: list[int] = field(default_factory=list)  # batch positions not yet attributed (this batch only)
    last_ns: int = 0


class FragmentTracker:
    """Per-datagram fragment state across batches."""

    def __init__(self, timeout_s: float = 60.0, max_datagrams: int = 65536) -> None:
        self._timeout_ns = int(timeout_s * 1e9)
        self._max = max_datagrams
        self._datagrams: dict[tuple, _Datagram] = {}
        self.counters = {"fragments": 0, "fragments_orphaned": 0}

    def process(self, batch: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Handle the fragment ``rows`` (positions in ``batch``), in capture order.

        ``batch`` is a ``PACKET_DTYPE`` array or anything indexed the same way by column name (the tracker
        passes its lazily selected columns) whose columns may be written.

        Fills the ports/ICMP fields of attributable non-first fragments in ``batch`` (in place) and returns
        (wrong: bool per batch row, attributed: positions of non-first fragments now carrying their
        connection's tuple; those are continuation bytes, not packets).
        """
        wrong = np.zeros(len(batch), dtype=bool)
        attributed: list[int] = []
        cols = [batch[c][rows].tolist() for c in ("src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "frag_id",
                                                   "frag_offset", "frag_mf", "payload_len", "ts_ns",
                                                   "sport", "dport", "icmp_type", "icmp_code")]
        self.counters["fragments"] += len(rows)
        for pos, (sh, sl, dh, dl, proto, fid, off, mf, plen, ts, sport, dport, itype, icode) in zip(
                rows.tolist(), zip(*cols)):
            key = (sh, sl, dh, dl, proto, fid)
            dgram = self._datagrams.get(key)
            if dgram is None or ts - dgram.last_ns > self._timeout_ns:
                dgram = self._datagrams[key] = _Datagram()
            dgram.last_ns = ts
            end = off + plen
            bad = end > MAX_DATAGRAM or plen == 0 or (mf and plen % 8)
            # An exact duplicate (retransmitted or replayed fragment) overlaps itself when non-empty, and adds
            # nothing to later overlap tests: a set answers it without scanning, and the list stays short.
            duplicate = (off, end) in dgram.seen
            bad = bad or (duplicate and off < end) or (
                off < dgram.high and any(off < e and s < end for s, e in dgram.ranges))
            wrong[pos] = bool(bad)
            if not duplicate:
                dgram.ranges.append((off, end))
                dgram.seen.add((off, end))
                dgram.high = max(dgram.high, end)
            if off == 0:
                dgram.first_row = (sport, dport, itype, icode)
                for w in dgram.waiting:
                    self._fill(batch, w, dgram.first_row)
                    attributed.append(w)
                dgram.waiting.clear()
            elif dgram.first_row is not None:
                self._fill(batch, pos, dgram.first_row)
                attributed.append(pos)
            else:
                dgram.waiting.append(pos)
        for dgram in self._datagrams.values():  # positions refer to this batch only
            self.counters["fragments_orphaned"] += len(dgram.waiting)
            dgram.waiting.clear()
        self._expire(int(batch["ts_ns"][rows].max()) if len(rows) else 0)
        return wrong, np.array(sorted(attributed), dtype=np.int64)

    @staticmethod
    def _fill(batch: Any, pos: int, first: tuple) -> None:
        batch["sport"][pos], batch["dport"][pos], batch["icmp_type"][pos], batch["icmp_code"][pos] = first

    def _expire(self, now_ns: int) -> None:
        if len(self._datagrams) <= self._max:
            stale = [k for k, d in self._datagrams.items() if now_ns - d.last_ns > self._timeout_ns]
        else:  # over the cap: drop the oldest half
            by_age = sorted(self._datagrams, key=lambda k: self._datagrams[k].last_ns)
            stale = by_age[: len(by_age) // 2]
        for key in stale:
            del self._datagrams[key]
