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

Cost: O(1) amortised per connection (a deque per window plus tallies updated on entry and expiry), no
rescans. Memory is bounded: the per-host and per-service histories together hold at most
``max_entries`` connections; past that the least recently used host or service is forgotten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from features.schema import HOST_FEATURES, TIME_FEATURES

TRAFFIC_FEATURES: tuple[str, ...] = TIME_FEATURES + HOST_FEATURES

NO_ERROR, SYN_ERROR, REJ_ERROR = 0, 1, 2
SERROR_STATES = frozenset({"S0", "S1", "S2", "S3", "SH", "SHR"})
RERROR_STATES = frozenset({"REJ", "RSTO", "RSTOS0", "RSTR", "RSTRH"})


def error_class(proto: str, conn_state: str) -> int:
    """SYN_ERROR, REJ_ERROR or NO_ERROR for a connection (only TCP has SYN or rejection errors)."""
    if proto != "tcp":
        return NO_ERROR
    if conn_state in SERROR_STATES:
        return SYN_ERROR
    if conn_state in RERROR_STATES:
        return REJ_ERROR
    return NO_ERROR


def _dec(tally: dict, key: Hashable) -> None:
    n = tally[key] - 1
    if n:
        tally[key] = n
    else:
        del tally[key]


class _LastN:
    """The last ``limit`` connections of one host (or service), with tallies kept in step.

    ``values`` of each entry are tallied per position (host window: service, source port; service window:
    destination host); ``errors`` counts entries per error class.
    """

    __slots__ = ("items", "tallies", "errors")

    def __init__(self, n_values: int) -> None:
        self.items: deque[tuple[tuple, int]] = deque()
        self.tallies: tuple[dict, ...] = tuple({} for _ in range(n_values))
        self.errors = [0, 0, 0]

    def add(self, values: tuple, err: int, limit: int) -> int:
        """Append an entry, drop the oldest past ``limit``; returns the change in stored entries (0 or 1)."""
        self.items.append((values, err))
        for tally, v in zip(self.tallies, values):
            tally[v] = tally.get(v, 0) + 1
        self.errors[err] += 1
        if len(self.items) <= limit:
            return 1
        old_values, old_err = self.items.popleft()
        for tally, v in zip(self.tallies, old_values):
            _dec(tally, v)
        self.errors[old_err] -= 1
        return 0


class TrafficWindows:
    """Feed connections in end order with ``push``; each call returns that connection's 19 traffic features.

    The state carries over between calls, so a daemon feeds records as the tracker emits them and a file
    is one long stream.
    """

    def __init__(self, time_window: float = 2.0, host_window: int = 100, max_entries: int = 1_000_000) -> None:
        if time_window <= 0 or host_window < 1 or max_entries < 2 * host_window:
            raise ValueError("need time_window > 0, host_window >= 1 and max_entries >= 2 * host_window")
        self.time_window = float(time_window)
        self.host_window = int(host_window)
        self.max_entries = int(max_entries)
        self.clock = float("-inf")  # latest end time seen
        self.forgotten = 0  # hosts/services dropped from the host-based windows to bound memory
        # time window: entries (t, host, srv, err) and per-key [n, serror, rerror] / pair counts
        self._recent: deque[tuple[float, Hashable, Hashable, int]] = deque()
        self._t_host: dict[Hashable, list[int]] = {}
        self._t_srv: dict[Hashable, list[int]] = {}
        self._t_pair: dict[tuple[Hashable, Hashable], int] = {}
        # host-based windows, in least-recently-used order (dicts keep insertion order)
        self._by_host: dict[Hashable, _LastN] = {}
        self._by_srv: dict[Hashable, _LastN] = {}
        self._entries = 0

    def push(self, end_ts: float, dst_host: Hashable, srv: Hashable, src_port: int, err: int) -> tuple[float, ...]:
        """Add one connection (``err`` from ``error_class``) and return its features in TRAFFIC_FEATURES order."""
        t = end_ts if end_ts > self.clock else self.clock
        self.clock = t
        time_feats = self._push_time(t, dst_host, srv, err)
        host_feats = self._push_host(dst_host, srv, src_port, err)
        return time_feats + host_feats

    def _push_time(self, t: float, host: Hashable, srv: Hashable, err: int) -> tuple[float, ...]:
        recent, by_host, by_srv, pairs = self._recent, self._t_host, self._t_srv, self._t_pair
        horizon = t - self.time_window
        while recent and recent[0][0] <= horizon:
            _, old_h, old_s, old_err = recent.popleft()
            for table, key in ((by_host, old_h), (by_srv, old_s)):
                stats = table[key]
                stats[0] -= 1
                if old_err:
                    stats[old_err] -= 1
                if not stats[0]:
                    del table[key]
            _dec(pairs, (old_h, old_s))
        recent.append((t, host, srv, err))
        hs = by_host.get(host)
        if hs is None:
            hs = by_host[host] = [0, 0, 0]
        ss = by_srv.get(srv)
        if ss is None:
            ss = by_srv[srv] = [0, 0, 0]
        hs[0] += 1
        ss[0] += 1
        if err:
            hs[err] += 1
            ss[err] += 1
        pair = pairs[(host, srv)] = pairs.get((host, srv), 0) + 1
        count, srv_count = hs[0], ss[0]
        return (
            float(count), float(srv_count),
            hs[SYN_ERROR] / count, ss[SYN_ERROR] / srv_count,
            hs[REJ_ERROR] / count, ss[REJ_ERROR] / srv_count,
            pair / count, (count - pair) / count,
            (srv_count - pair) / srv_count,
        )

    def _history(self, table: dict[Hashable, _LastN], key: Hashable, n_values: int) -> _LastN:
        window = table.pop(key, None)  # re-inserted below: moves the key to the most recent end
        if window is None:
            window = _LastN(n_values)
        table[key] = window
        return window

    def _push_host(self, host: Hashable, srv: Hashable, src_port: int, err: int) -> tuple[float, ...]:
        hw = self._history(self._by_host, host, 2)
        sw = self._history(self._by_srv, srv, 1)
        self._entries += hw.add((srv, src_port), err, self.host_window)
        self._entries += sw.add((host,), err, self.host_window)
        n_h, n_s = len(hw.items), len(sw.items)
        same_srv = hw.tallies[0][srv]
        features = (
            float(n_h), float(n_s),
            same_srv / n_h, (n_h - same_srv) / n_h,
            hw.tallies[1][src_port] / n_h,
            (n_s - sw.tallies[0][host]) / n_s,
            hw.errors[SYN_ERROR] / n_h, sw.errors[SYN_ERROR] / n_s,
            hw.errors[REJ_ERROR] / n_h, sw.errors[REJ_ERROR] / n_s,
        )
        if self._entries > self.max_entries:
            self._forget()
        return features

    def _forget(self) -> None:
        """Drop least recently used hosts/services until the stored entries fit ``max_entries`` again."""
        while self._entries > self.max_entries:
            table = self._by_host if len(self._by_host) >= len(self._by_srv) else self._by_srv
            key = next(iter(table))
            self._entries -= len(table.pop(key).items)
            self.forgotten += 1
