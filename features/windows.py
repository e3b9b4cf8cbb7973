"""The 19 KDD traffic features, computed over sliding windows of past connections, streaming.

Nine time-based features look at the connections of the past ``time_window`` seconds (KDD: 2 s); ten
host-based ``dst_host_*`` features look at the past ``host_window`` connections (KDD: 100). Decisions (the
reasons, with the evidence from NSL-KDD, are in docs/features.md):

- Order and time: a connection enters the windows when it *ends* (``end_ts``), because only then are its
  flag and error class known; the time window holds the connections that ended in
  ``(t - time_window, t]``. Records must arrive in end order; one that ends before a record already seen
  (a connection expired late by a timer) is counted at the latest time seen rather than rewriting history.
- The current connection counts itself (NSL-KDD has ``count >= 1`` on all but a handful of rows).
- "Same host" is the destination host (``resp_h``). "Same service" is the KDD service name within the
  protocol (``tcp/private`` and ``udp/private`` differ), not the port.
- SYN error: TCP ``conn_state`` S0, S1, S2, S3, SH (and Zeek's SHR); rejection error: REJ, RSTO, RSTOS0,
  RSTR (and Zeek's RSTRH). These are exactly the flags for which NSL-KDD rows with ``count == 1`` have
  ``serror_rate == 1`` resp. ``rerror_rate == 1``. SF and OTH are neither, and so is every UDP/ICMP flow.
- Time-based: count, serror_rate, rerror_rate, same_srv_rate, diff_srv_rate are over the same-host
  connections of the window; srv_count, srv_serror_rate, srv_rerror_rate, srv_diff_host_rate over its
  same-service connections.
- Host-based: the window is the last ``host_window`` connections *to the same destination host* (for
  dst_host_count, dst_host_same_srv_rate, dst_host_diff_srv_rate, dst_host_same_src_port_rate,
  dst_host_serror_rate, dst_host_rerror_rate) and the last ``host_window`` connections *to the same
  service* (for dst_host_srv_count, dst_host_srv_diff_host_rate, dst_host_srv_serror_rate,
  dst_host_srv_rerror_rate): NSL-KDD has dst_host_srv_count > dst_host_count on 28% of its rows, which no
  subset of a per-host window can give.

Cost: connections are taken in groups (a tracker batch) and computed with numpy, no per-connection Python
loop and no rescans: each window is a range of arrival positions (time: the connections that ended after
``t - time_window``; host-based: from the ``host_window``-th latest connection of the host or service), and
every count or error tally over a range of one host, service, host+service or host+source-port group is
two binary searches in the group-sorted rows (``_Groups``). Memory is bounded: the per-host and
per-service histories together hold at most ``max_entries`` connections (checked after each group);
past that the least recently used host or service is forgotten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

import numpy as np

from features.schema import FLAG_VALUES, HOST_FEATURES, PROTOCOL_VALUES, TIME_FEATURES

TRAFFIC_FEATURES: tuple[str, ...] = TIME_FEATURES + HOST_FEATURES

NO_ERROR, SYN_ERROR, REJ_ERROR = 0, 1, 2
SERROR_STATES = frozenset({"S0", "S1", "S2", "S3", "SH", "SHR"})
RERROR_STATES = frozenset({"REJ", "RSTO", "RSTOS0", "RSTR", "RSTRH"})


# error class by flag code (code -1, a state outside the vocabulary, is the last entry: no error)
_ERROR_BY_FLAG = np.array([SYN_ERROR if f in SERROR_STATES else REJ_ERROR if f in RERROR_STATES else NO_ERROR
                           for f in FLAG_VALUES + ("",)], dtype=np.int8)
_TCP_CODE = PROTOCOL_VALUES.index("tcp")


def error_classes(proto_codes: np.ndarray, flag_codes: np.ndarray) -> np.ndarray:
    """SYN_ERROR, REJ_ERROR or NO_ERROR per connection from its protocol_type and flag codes (features.schema):
    only TCP has SYN errors (``SERROR_STATES``) or rejections (``RERROR_STATES``)."""
    return np.where(proto_codes == _TCP_CODE, _ERROR_BY_FLAG[flag_codes], NO_ERROR).astype(np.int8)


class _Groups:
    """Rows grouped by an integer code, each group in row order: counts and sums over a row range of a group.

    Rows sit at positions 0..m-1 (position order = arrival order). Sorting by ``code * m + position`` puts
    each group's rows together in arrival order, so "rows of group g between positions lo and hi" is one
    pair of binary searches, and a per-row weight summed over them is a difference of a prefix sum.
    Code -1 marks rows outside every group (never queried).
    """

    __slots__ = ("m", "order", "key", "sums")

    def __init__(self, codes: np.ndarray, weights: tuple[np.ndarray, ...] = (),
                 order: np.ndarray | None = None) -> None:
        self.m = m = len(codes)
        if order is None:
            order = np.argsort(codes * m + np.arange(m))  # keys are distinct: no need for a stable sort
        self.order = order
        self.key = codes[order] * m + order
        self.sums = [np.concatenate(([0], np.cumsum(w[order]))) for w in weights]

    def subset(self, codes: np.ndarray, weights: tuple[np.ndarray, ...] = ()) -> "_Groups":
        """Groups of ``codes``, which are this one's codes with some rows set to -1: the order (-1 rows
        first, in row order, then this one's order without them) is derived, no second sort."""
        member = codes >= 0
        order = np.concatenate((np.flatnonzero(~member), self.order[member[self.order]]))
        return _Groups(codes, weights, order)

    def span(self, codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted-index bounds [a, b) of the rows of group ``codes`` at positions ``lo..hi`` (inclusive)."""
        base = codes * self.m
        return (np.searchsorted(self.key, base + lo, "left"), np.searchsorted(self.key, base + hi, "right"))

    def count(self, codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Rows of group ``codes`` at positions ``lo..hi``."""
        a, b = self.span(codes, lo, hi)
        return b - a

    def total(self, k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Sum of weight ``k`` over sorted indices [a, b)."""
        return self.sums[k][b] - self.sums[k][a]

    def beyond_last(self, codes: np.ndarray, limit: int) -> np.ndarray:
        """Positions of rows (with code >= 0) that are not among the last ``limit`` rows of their group."""
        sorted_codes = codes[self.order]
        n = len(sorted_codes)
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if n else np.zeros(0, int)
        ends = np.r_[starts[1:], n]
        rank_from_end = np.repeat(ends, ends - starts) - np.arange(n) - 1
        return self.order[(sorted_codes >= 0) & (rank_from_end >= limit)]


def _codes(values: np.ndarray) -> np.ndarray:
    """Dense codes 0..k-1 of an integer array (equal values, equal codes)."""
    return np.unique(values, return_inverse=True)[1].reshape(-1) if len(values) else values


def _small(values: np.ndarray, m: int) -> np.ndarray:
    """``values`` (non-negative ids or ports) as group codes for ``m`` rows: as they are where ``code * m``
    cannot overflow (the usual case: saves a sort), else dense codes."""
    return values if 0 <= int(values.min()) and int(values.max()) < (1 << 62) // m else _codes(values)


# One remembered connection: arrival number, (clamped) end time, interned destination host and service,
# source port, error class, and whether it is still in its host's resp. its service's host-based window.
ROW_DTYPE = np.dtype([("seq", "<i8"), ("t", "<f8"), ("host", "<i8"), ("srv", "<i8"), ("sport", "<i8"),
                      ("err", "<i1"), ("hw", "?"), ("sw", "?")])


class TrafficWindows:
    """Feed connections in end order (``push_many`` for a group, ``push`` for one); each gets its 19
    traffic features. The state carries over between calls, so a daemon feeds records as the tracker emits
    them and a file is one long stream; the result is the same however the stream is cut into calls.

    State: the connections still needed, one numpy row each (ROW_DTYPE): those in the time window and
    those among the last ``host_window`` of their host or of their service. A group of n connections costs
    a few sorts of n plus the remembered rows of the hosts and services it touches, no per-connection
    Python loop.
    """

    def __init__(self, time_window: float = 2.0, host_window: int = 100, max_entries: int = 1_000_000) -> None:
        if time_window <= 0 or host_window < 1 or max_entries < 2 * host_window:
            raise ValueError("need time_window > 0, host_window >= 1 and max_entries >= 2 * host_window")
        self.time_window = float(time_window)
        self.host_window = int(host_window)
        self.max_entries = int(max_entries)
        self.clock = float("-inf")  # latest end time seen
        self.forgotten = 0  # hosts/services dropped from the host-based windows to bound memory
        self.rows = np.zeros(0, ROW_DTYPE)  # in arrival order
        self._seq = 0
        self._ids: tuple[dict[Hashable, int], dict[Hashable, int]] = ({}, {})  # host, service -> id
        self._next_id = 0

    def push(self, end_ts: float, dst_host: Hashable, srv: Hashable, src_port: int, err: int) -> tuple[float, ...]:
        """Add one connection (``err`` from ``error_classes``) and return its features in TRAFFIC_FEATURES order."""
        return tuple(self.push_many([end_ts], [dst_host], [srv], [src_port], [err])[0].tolist())

    def push_many(self, end_ts: Sequence[float], dst_hosts: Sequence[Hashable], srvs: Sequence[Hashable],
                  src_ports: Sequence[int], errs: Sequence[int]) -> np.ndarray:
        """Add connections in end order; returns their features, shape (n, 19), TRAFFIC_FEATURES order."""
        n = len(end_ts)
        if not n:
            return np.zeros((0, len(TRAFFIC_FEATURES)))
        new = np.zeros(n, ROW_DTYPE)
        new["seq"] = np.arange(self._seq, self._seq + n)
        self._seq += n
        # a record ending before one already seen counts at the latest time seen (history is not rewritten)
        new["t"] = np.maximum.accumulate(np.r_[self.clock, np.asarray(end_ts, dtype=np.float64)])[1:]
        self.clock = float(new["t"][-1])
        new["host"] = self._intern(0, dst_hosts)
        new["srv"] = self._intern(1, srvs)
        new["sport"] = src_ports
        new["err"] = errs
        new["hw"] = new["sw"] = True
        old = self.rows
        # the remembered rows that can enter this group's features: those of its hosts (host windows, time
        # window, host+service and host+port tallies) and of its services that are in a service window or
        # in the time window; rows a service keeps only for another host's window play no part
        recent = (old["t"] > new["t"][0] - self.time_window) | old["sw"]
        sel = np.flatnonzero(np.isin(old["host"], new["host"]) | (recent & np.isin(old["srv"], new["srv"])))
        rows = np.concatenate((old[sel], new))
        feats = self._features(rows, len(sel))
        # keep the host-based windows at their length, then drop rows no window needs any more
        old["hw"][sel], old["sw"][sel] = rows["hw"][: len(sel)], rows["sw"][: len(sel)]
        kept = np.concatenate((old, rows[len(sel):]))
        self.rows = kept[kept["hw"] | kept["sw"] | (kept["t"] > self.clock - self.time_window)]
        if np.count_nonzero(self.rows["hw"]) + np.count_nonzero(self.rows["sw"]) > self.max_entries:
            self._forget()
        self._drop_unused_ids()
        return feats

    def _features(self, rows: np.ndarray, first: int) -> np.ndarray:
        """Features of ``rows[first:]`` given the earlier remembered rows; updates the hw/sw flags in place."""
        m = len(rows)
        q = np.arange(first, m)
        serr = (rows["err"] == SYN_ERROR).astype(np.int64)
        rerr = (rows["err"] == REJ_ERROR).astype(np.int64)
        host, srv, sport = _small(rows["host"], m), _small(rows["srv"], m), _small(rows["sport"], m)
        pair = _small(host * (srv.max() + 1) + srv, m)
        host_port = _small(host * (sport.max() + 1) + sport, m)
        hq, sq, pq = host[q], srv[q], pair[q]
        # time-based: positions lo..q hold the connections that ended in (t - time_window, t]
        lo = np.searchsorted(rows["t"], rows["t"][first:] - self.time_window, "right")
        by_host, by_srv, by_pair = _Groups(host, (serr, rerr)), _Groups(srv, (serr, rerr)), _Groups(pair)
        a, b = by_host.span(hq, lo, q)
        sa, sb = by_srv.span(sq, lo, q)
        pa, pb = by_pair.span(pq, lo, q)
        count, srv_count, same = b - a, sb - sa, pb - pa
        time_feats = (count, srv_count, by_host.total(0, a, b) / count, by_srv.total(0, sa, sb) / srv_count,
                      by_host.total(1, a, b) / count, by_srv.total(1, sa, sb) / srv_count,
                      same / count, (count - same) / count, (srv_count - same) / srv_count)
        # host-based: the last host_window rows of the host (service) still in its window
        hw_codes, sw_codes = np.where(rows["hw"], host, -1), np.where(rows["sw"], srv, -1)
        in_hw, in_sw = by_host.subset(hw_codes, (serr, rerr)), by_srv.subset(sw_codes, (serr, rerr))
        zero = np.zeros_like(q)
        a, b = in_hw.span(hq, zero, q)
        n_h = np.minimum(b - a, self.host_window)
        a = b - n_h
        start_h = in_hw.key[a] - hq * m  # position of the oldest connection in the host window
        sa, sb = in_sw.span(sq, zero, q)
        n_s = np.minimum(sb - sa, self.host_window)
        sa = sb - n_s
        start_s = in_sw.key[sa] - sq * m
        same_srv = by_pair.count(pq, start_h, q)
        same_port = _Groups(host_port).count(host_port[q], start_h, q)
        same_host = by_pair.count(pq, start_s, q)
        host_feats = (n_h, n_s, same_srv / n_h, (n_h - same_srv) / n_h, same_port / n_h, (n_s - same_host) / n_s,
                      in_hw.total(0, a, b) / n_h, in_sw.total(0, sa, sb) / n_s,
                      in_hw.total(1, a, b) / n_h, in_sw.total(1, sa, sb) / n_s)
        rows["hw"][in_hw.beyond_last(hw_codes, self.host_window)] = False
        rows["sw"][in_sw.beyond_last(sw_codes, self.host_window)] = False
        return np.column_stack(time_feats + host_feats).astype(np.float64)

    def _intern(self, which: int, keys: Sequence[Hashable]) -> list[int]:
        """Integer ids for hosts (0) or services (1); ids are never reused, so remembered rows stay valid."""
        ids = self._ids[which]
        out = list(map(ids.get, keys))  # known keys in one C loop; new ones numbered in order below
        if None in out:
            for k, key in enumerate(keys):
                if out[k] is None:
                    i = ids.get(key)
                    if i is None:
                        i = ids[key] = self._next_id
                        self._next_id += 1
                    out[k] = i
        return out

    def _drop_unused_ids(self) -> None:
        """Forget the ids of hosts and services no remembered row has (amortised: only when many are unused)."""
        for which, column in ((0, "host"), (1, "srv")):
            ids = self._ids[which]
            if len(ids) > 1024 and len(ids) > 2 * len(self.rows):
                live = set(np.unique(self.rows[column]).tolist())
                for key in [k for k, v in ids.items() if v not in live]:
                    del ids[key]

    def _forget(self) -> None:
        """Drop least recently used hosts/services until the host-based windows hold ``max_entries`` again."""
        rows = self.rows
        lru = []
        for column, flag in (("host", "hw"), ("srv", "sw")):
            mine = rows[rows[flag]]
            keys, last_pos = np.unique(mine[column][::-1], return_index=True)  # first from the end = latest
            sizes = np.unique(mine[column], return_counts=True)[1]
            by_age = np.argsort(len(mine) - 1 - last_pos, kind="stable")
            lru.append(deque(zip(keys[by_age].tolist(), sizes[by_age].tolist())))
        hosts, srvs = lru
        entries = np.count_nonzero(rows["hw"]) + np.count_nonzero(rows["sw"])
        dropped: tuple[list[int], list[int]] = ([], [])
        while entries > self.max_entries:
            which = 0 if len(hosts) >= len(srvs) else 1
            key, size = (hosts, srvs)[which].popleft()
            dropped[which].append(key)
            entries -= size
            self.forgotten += 1
        rows["hw"][np.isin(rows["host"], dropped[0])] = False
        rows["sw"][np.isin(rows["srv"], dropped[1])] = False
        self.rows = rows[rows["hw"] | rows["sw"] | (rows["t"] > self.clock - self.time_window)]
