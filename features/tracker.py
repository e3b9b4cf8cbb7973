"""Packet batches -> Zeek-compatible connection records.

Design (why it is fast enough for a gateway):

1. Each batch is filtered (non-IP / malformed rows counted), fragments are handed to
   ``features.fragments``, and every packet gets a canonical bidirectional key (lower endpoint first; ICMP
   ports are Zeek's type/counterpart pair) computed with numpy.
2. One stable ``np.lexsort`` groups the batch by key, keeping capture order inside each group.
3. UDP, ICMP and other protocols are pure aggregation: groups are cut where the inactivity timeout splits
   them and every segment's packets, IP bytes and payload bytes per direction come from
   ``np.add.reduceat``; Python runs once per segment.
4. TCP needs Zeek's order-dependent state machine (``features.tcp_state``), but only SYN/FIN/RST segments
   and the first packets of a connection really step through it. Runs of plain ACK/data segments of an
   open session (most packets) are folded in with a few numpy reductions (``features.tcp_runs``), or, when
   short, stepped through a lean variant without the state machine; a connection that is a single SYN
   (floods, scans) is kept as a compact ``SynAttempt`` until a second packet arrives. All three shortcuts
   give exactly the per-packet records (tests/test_tracker_states.py proves it with ``fast_paths=False``).
5. Records are built once per call for every connection finished in it: address text and Community IDs
   in bulk (``_emit``), so a short connection costs a few microseconds of Python, not a dozen.

Timers follow packet time during ``process`` (a packet arriving after its connection's deadline starts a
new connection; other connections expire through a deadline heap at the end of each batch) and the wall
clock through ``advance`` when a live link is idle. Memory is bounded by ``max_connections``: past it, the
oldest unanswered attempts are evicted first (a spoofed SYN flood cannot push out established
connections), then the least recently active connections; every eviction emits its record and is counted.
"""

from __future__ import annotations

import heapq
import math
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from features.direction import ICMP4_COUNTERPART, ICMP6_COUNTERPART, flip_new_connection
from features.flow_ids import UidGenerator, community_id, community_ids
from features.fragments import FragmentTracker
from features.records import ConnectionRecord
from features.tcp_runs import (MIN_RUN, RunSums, TcpColumns, apply_side, merge_history, open_session,
                               plain_run_ends, side_fits, side_run)
from features.tcp_state import SynAttempt, TcpSession
from sensor.packets import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN,
                            TCP_RST, TCP_SYN, TCP_URG, Malformed)

_NS = 1_000_000_000
_NOTHING = (0, 0)
_V4_PREFIX = 0xFFFF


@dataclass
class TrackerSettings:
    """Timeouts in seconds (Zeek's defaults) and the connection cap; see sensor/config.py ``tracker.*``."""

    tcp_inactivity_timeout: float = 300.0
    udp_inactivity_timeout: float = 60.0
    icmp_inactivity_timeout: float = 60.0
    tcp_attempt_timeout: float = 5.0
    tcp_close_linger: float = 5.0
    tcp_reset_linger: float = 5.0
    active_timeout: float | None = None
    max_connections: int = 1_000_000

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TrackerSettings:
        """Build from ``cfg.section("tracker")`` (unknown keys are ignored, missing ones keep defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})


# A connection key: proto, then the lower endpoint A (addr hi, lo, port), then B, packed little-endian. One
# bytes object per connection instead of a tuple of seven ints: a third of the memory, and not GC-tracked.
_KEY = struct.Struct("<BQQHQQH")
_KEY_DTYPE = np.dtype([("proto", "u1"), ("ah", "<u8"), ("al", "<u8"), ("ap", "<u2"), ("bh", "<u8"),
                       ("bl", "<u8"), ("bp", "<u2")])  # the same layout, built for a whole batch at once
assert _KEY_DTYPE.itemsize == _KEY.size


class _Conn:
    """One tracked connection; its addresses live only in ``key`` until the record is built."""

    __slots__ = ("key", "uid", "proto", "orig_is_a", "first_ns", "last_ns", "o_pkts", "o_ip", "r_pkts", "r_ip",
                 "o_pay", "r_pay", "urgent", "wrong", "tcp", "hist", "heap_at", "period_ns", "reported")

    def __init__(self, key: bytes, uid: str, proto: int, orig_is_a: bool, t: int,
                 tcp: TcpSession | SynAttempt | None) -> None:
        self.key, self.uid, self.proto, self.orig_is_a = key, uid, proto, orig_is_a
        self.first_ns = self.last_ns = self.period_ns = t
        self.o_pkts = self.o_ip = self.r_pkts = self.r_ip = self.o_pay = self.r_pay = 0
        self.urgent = self.wrong = 0
        self.tcp = tcp  # None for UDP, ICMP and other protocols
        self.hist: list[str] | None = None if tcp else []  # UDP history letters (TCP keeps its own)
        self.heap_at = math.inf
        self.reported = _NOTHING  # payload bytes already reported in interim records (TCP sizes are cumulative)

    def endpoints(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """((orig hi, lo, port), (resp hi, lo, port))."""
        _, ah, al, ap, bh, bl, bp = _KEY.unpack(self.key)
        return ((ah, al, ap), (bh, bl, bp)) if self.orig_is_a else ((bh, bl, bp), (ah, al, ap))

    def swap_roles(self) -> None:
        self.orig_is_a = not self.orig_is_a
        self.o_pkts, self.o_ip, self.o_pay, self.r_pkts, self.r_ip, self.r_pay = (
            self.r_pkts, self.r_ip, self.r_pay, self.o_pkts, self.o_ip, self.o_pay)


class _Columns:
    """Lazy column selection of a packet batch: ``cols[name]`` is that column taken at ``rows``, built once.

    Why: fancy-indexing a whole structured ``PACKET_DTYPE`` array copies every field (about 13 ms per
    64k-packet batch), while the tracker reads a dozen columns; taking those one by one is ~10x cheaper.
    Columns taken at ``rows`` are private copies (fragment attribution writes into them); without ``rows``
    they are read-only views of the source.
    """

    __slots__ = ("_source", "_rows", "_cache", "_n")

    def __init__(self, source: np.ndarray | _Columns, rows: np.ndarray | None) -> None:
        self._source, self._rows, self._cache = source, rows, {}
        self._n = len(source) if rows is None else len(rows)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        col = self._cache.get(name)
        if col is None:
            col = self._source[name]
            if self._rows is None:
                col = col.view()
                col.flags.writeable = False
            else:
                col = col[self._rows]
            self._cache[name] = col
        return col

    def take(self, rows: np.ndarray) -> _Columns:
        return _Columns(self, rows)


class _Addresses:
    """Text and packed forms of (hi, lo) addresses, memoised: the same hosts recur in many connections."""

    _MAX = 1 << 16

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int], tuple[str, bytes]] = {}

    def get(self, hi: int, lo: int) -> tuple[str, bytes]:
        key = (hi, lo)
        found = self._memo.get(key)
        if found is None:
            if hi == 0 and lo >> 32 == _V4_PREFIX:
                packed = (lo & 0xFFFFFFFF).to_bytes(4, "big")
                found = (socket.inet_ntop(socket.AF_INET, packed), packed)
            else:
                packed = hi.to_bytes(8, "big") + lo.to_bytes(8, "big")
                found = (socket.inet_ntop(socket.AF_INET6, packed), packed)
            if len(self._memo) >= self._MAX:
                self._memo.clear()
            self._memo[key] = found
        return found

    def text(self, hi: np.ndarray, lo: np.ndarray) -> list[str]:
        """Text of many addresses (one memo lookup each)."""
        memo, get = self._memo, self.get
        return [(memo.get(key) or get(*key))[0] for key in zip(hi.tolist(), lo.tolist())]


def _group_rows(groups: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
    """(rows of the chosen groups in group order, their lengths, their starts within those rows)."""
    lens = ends[groups] - starts[groups]
    local_starts = np.cumsum(lens) - lens
    return np.repeat(starts[groups] - local_starts, lens) + np.arange(int(lens.sum())), lens, local_starts


_PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmp"}


class ConnectionTracker:
    """Zeek-style connection tracking over ``PACKET_DTYPE`` batches (see the module docstring)."""

    # Fast paths (plain runs of an open TCP session, lone SYNs): results are identical either way; tests
    # switch them off or force them (min_run=1) to prove it on real and randomised traffic.
    fast_paths: bool = True
    min_run: int = MIN_RUN  # shortest plain run that goes through the numpy path (features.tcp_runs)

    def __init__(self, settings: TrackerSettings | None = None, uid_seed: int | None = None) -> None:
        self.settings = s = settings or TrackerSettings()
        self._uids = UidGenerator(uid_seed)
        self._frags = FragmentTracker()
        self._addresses = _Addresses()
        self._conns: dict[bytes, _Conn] = {}
        self._done: list[tuple[Any, ...]] = []  # finished periods not yet turned into records (see _emit)
        # (deadline, push order, key, uid): atoms only, so the garbage collector stops tracking the entries
        self._heap: list[tuple[int, int, bytes, str]] = []
        self._heap_seq = 0
        self._tcp_idle = int(s.tcp_inactivity_timeout * _NS)
        self._attempt = int(s.tcp_attempt_timeout * _NS)
        self._close = int(s.tcp_close_linger * _NS)
        self._reset = int(s.tcp_reset_linger * _NS)
        self._idle = {IPPROTO_UDP: int(s.udp_inactivity_timeout * _NS),
                      IPPROTO_ICMP: int(s.icmp_inactivity_timeout * _NS),
                      IPPROTO_ICMPV6: int(s.icmp_inactivity_timeout * _NS)}
        self._other_idle = int(s.udp_inactivity_timeout * _NS)
        self._active = int(s.active_timeout * _NS) if s.active_timeout else None
        self.counters: dict[str, int] = {
            "connections": 0, "records": 0, "interim_records": 0, "evicted_attempts": 0, "evicted_other": 0,
            "non_ip": 0, "malformed": 0, "fragments": 0, "fragments_orphaned": 0, "wrong_fragments": 0}

    def __len__(self) -> int:
        return len(self._conns)

    # -- public API ----------------------------------------------------------------------------------
    def process(self, batch: np.ndarray) -> list[ConnectionRecord]:
        """Track one batch; returns the records of connections finished by it (timeouts in packet time)."""
        if len(batch) == 0:
            return []
        bad = batch["malformed"]
        if bad.any():
            non_ip = int(np.count_nonzero(bad == Malformed.NON_IP))
            self.counters["non_ip"] += non_ip
            self.counters["malformed"] += int(np.count_nonzero(bad)) - non_ip
        is_frag = batch["is_fragment"] != 0
        pk = _Columns(batch, np.flatnonzero(bad == 0) if bad.any() or is_frag.any() else None)
        if len(pk) == 0:
            return []
        wrong = np.zeros(len(pk), dtype=bool)
        continuation = np.empty(0, dtype=np.int64)
        is_frag = pk["is_fragment"] != 0
        if is_frag.any():
            wrong, continuation = self._frags.process(pk, np.flatnonzero(is_frag))
            self.counters["fragments"] = self._frags.counters["fragments"]
            self.counters["fragments_orphaned"] = self._frags.counters["fragments_orphaned"]
            self.counters["wrong_fragments"] += int(np.count_nonzero(wrong))
            packets = np.flatnonzero(~(is_frag & (pk["frag_offset"] > 0)))
            cont_rows, cont_wrong = pk.take(continuation), wrong[continuation]
            pk, wrong = pk.take(packets), wrong[packets]
        if len(pk):
            self._track(pk, wrong)
        if len(continuation):
            self._add_continuations(cont_rows, cont_wrong)
        self._expire(int(batch["ts_ns"].max()))
        return self._emit()

    def advance(self, now_ns: int) -> list[ConnectionRecord]:
        """Expire by the wall clock (live capture on an idle link)."""
        self._expire(now_ns)
        return self._emit()

    def flush(self) -> list[ConnectionRecord]:
        """End of input: every connection still open, in start order."""
        conns = sorted(self._conns.values(), key=lambda c: c.first_ns)
        for conn in conns:
            self._finish(conn)
        self._heap.clear()
        return self._emit()

    # -- keys and grouping ---------------------------------------------------------------------------
    def _track(self, pk: _Columns, wrong: np.ndarray) -> None:
        proto = pk["proto"]
        sp = pk["sport"].astype(np.int32)
        dp = pk["dport"].astype(np.int32)
        one_way = np.zeros(len(pk), dtype=bool)
        icmp = (proto == IPPROTO_ICMP) | (proto == IPPROTO_ICMPV6)
        if icmp.any():
            itype = pk["icmp_type"][icmp]
            cp = np.where(proto[icmp] == IPPROTO_ICMP, ICMP4_COUNTERPART[itype], ICMP6_COUNTERPART[itype])
            ow = cp < 0
            sp[icmp] = itype
            dp[icmp] = np.where(ow, pk["icmp_code"][icmp], cp)
            one_way[icmp] = ow
        sh, sl, dh, dl = pk["src_hi"], pk["src_lo"], pk["dst_hi"], pk["dst_lo"]
        src_first = (sh < dh) | ((sh == dh) & ((sl < dl) | ((sl == dl) & (sp <= dp)))) | one_way
        ah, al, ap = np.where(src_first, sh, dh), np.where(src_first, sl, dl), np.where(src_first, sp, dp)
        bh, bl, bp = np.where(src_first, dh, sh), np.where(src_first, dl, sl), np.where(src_first, dp, sp)
        order = np.lexsort((bp, ap, bl, bh, al, ah, proto))
        ah, al, ap, bh, bl, bp = ah[order], al[order], ap[order], bh[order], bl[order], bp[order]
        proto_s, from_a = proto[order], src_first[order]
        change = np.ones(len(order), dtype=bool)
        change[1:] = ((ah[1:] != ah[:-1]) | (al[1:] != al[:-1]) | (ap[1:] != ap[:-1]) | (bh[1:] != bh[:-1])
                      | (bl[1:] != bl[:-1]) | (bp[1:] != bp[:-1]) | (proto_s[1:] != proto_s[:-1]))
        starts = np.flatnonzero(change)
        ends = np.append(starts[1:], len(order))
        packed = np.empty(len(starts), dtype=_KEY_DTYPE)
        for name, col in zip(_KEY_DTYPE.names, (proto_s, ah, al, ap, bh, bl, bp)):
            packed[name] = col[starts]
        keys = packed.view(f"V{_KEY.size}").tolist()
        wrong_s = wrong[order]
        is_tcp = proto_s[starts] == IPPROTO_TCP
        tcp_groups = np.flatnonzero(is_tcp)
        if len(tcp_groups):
            self._track_tcp(pk, order, from_a, wrong_s, starts, ends, keys, tcp_groups)
        other_groups = np.flatnonzero(~is_tcp)
        if len(other_groups):
            self._track_other(pk, order, from_a, wrong_s, sp[order], dp[order], starts, ends, keys, other_groups)

    def _new_conn(self, key: bytes, from_a: bool, flip: bool, t: int,
                  tcp: TcpSession | SynAttempt | None = None) -> _Conn:
        if len(self._conns) >= self.settings.max_connections:
            self._evict()
        proto = key[0]
        if proto == IPPROTO_TCP and tcp is None:
            tcp = TcpSession()
        conn = _Conn(key, self._uids.next(), proto, from_a != flip, t, tcp)
        if flip:
            (conn.tcp.history if conn.tcp else conn.hist).append("^")
        self._conns[key] = conn
        self.counters["connections"] += 1
        return conn

    # -- TCP -----------------------------------------------------------------------------------------
    def _track_tcp(self, pk, order, from_a, wrong_s, starts, ends, keys, groups) -> None:
        """``from_a``, ``wrong_s``, ``starts``, ``ends`` are in grouped order (batch rows ``order``)."""
        sel, lens_g, local_starts = _group_rows(groups, starts, ends)
        pkts = pk.take(order[sel])  # one copy of each column, straight into grouped TCP order
        fa_np = from_a[sel]
        group_start = np.zeros(len(sel), dtype=bool)
        group_start[local_starts] = True
        seq_np = pkts["tcp_seq"].astype(np.int64)
        plen_np = pkts["payload_len"].astype(np.int64)
        cols = TcpColumns(pkts["ts_ns"], pkts["tcp_flags"], (seq_np + plen_np) & 0xFFFFFFFF,
                          pkts["tcp_ack"].astype(np.int64), plen_np, pkts["tcp_win"], fa_np)
        fast = self.fast_paths
        run_end = plain_run_ends(cols, group_start, self._tcp_idle).tolist() if fast else range(len(sel))
        ts = cols.ts.tolist()
        flags = cols.flags.tolist()
        seqs = seq_np.tolist()
        acks = pkts["tcp_ack"].tolist()
        plens = plen_np.tolist()
        wins = pkts["tcp_win"].tolist()
        iplens = pkts["ip_len"].tolist()
        fa = fa_np.tolist()
        wr = wrong_s[sel].tolist()
        # read only per new connection
        sport, dport, dst_hi, dst_lo = pkts["sport"], pkts["dport"], pkts["dst_hi"], pkts["dst_lo"]
        runs = RunSums(pkts["ip_len"], fa_np, (cols.flags & TCP_URG) != 0, wrong_s[sel])
        conns = self._conns
        attempt = self._attempt
        idle = self._tcp_idle
        min_run = self.min_run
        j = 0
        for g, n in zip(groups.tolist(), lens_g.tolist()):
            key = keys[g]
            conn = conns.get(key)
            if conn is None:
                if fast and n == 1 and SynAttempt.applies(flags[j], plens[j]):  # flood/scan: one SYN
                    conn = self._new_conn(key, fa[j], False, ts[j],
                                          SynAttempt(seqs[j], wins[j], ts[j], attempt))
                    conn.o_pkts, conn.o_ip = 1, iplens[j]
                    conn.urgent, conn.wrong = int(flags[j] & TCP_URG != 0), int(wr[j])
                    j += 1
                    self._schedule(conn)
                    continue
            elif conn.tcp.__class__ is SynAttempt:
                conn.tcp = conn.tcp.session()
            stop = j + n
            while j < stop:
                e = run_end[j]
                if e > j and conn is not None and conn.last_ns + idle > ts[j] and open_session(conn.tcp):
                    # plain segments of an open session: no state changes, no new connection inside
                    if e - j < min_run or not self._fast_run(conn, cols, runs, j, e):
                        conn.tcp.plain_steps(conn.orig_is_a, fa, flags, seqs, acks, plens, wins, ts, j, e)
                        self._add_run(conn, runs, j, e, ts[e - 1])
                    j = e
                    continue
                # the per-packet path: Zeek's state machine for one segment (see features.tcp_state)
                t, fl, from_a_j = ts[j], flags[j], fa[j]
                if conn is not None and ((self._may_be_due(conn, t) and self._tcp_deadline(conn) <= t)
                                         or (fl & TCP_SYN and conn.tcp.is_reuse(fl, seqs[j]))):
                    self._finish(conn)
                    conn = None
                opened = None
                if conn is None:
                    syn_ack = fl & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK)
                    syn_only = fl & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
                    flip = flip_new_connection(IPPROTO_TCP, int(sport[j]), int(dport[j]), syn_only, syn_ack,
                                               int(dst_hi[j]), int(dst_lo[j]))
                    if fast and not flip and SynAttempt.applies(fl, plens[j]):
                        opened = TcpSession.from_syn(seqs[j], wins[j], t, t + attempt)
                    conn = self._new_conn(key, from_a_j, flip, t, opened)
                if opened is None:
                    tcp = conn.tcp
                    flips = tcp.flips
                    tcp.packet(from_a_j == conn.orig_is_a, fl, seqs[j], acks[j], plens[j], wins[j], t, attempt)
                    if tcp.flips != flips:
                        conn.swap_roles()
                if from_a_j == conn.orig_is_a:
                    conn.o_pkts += 1
                    conn.o_ip += iplens[j]
                else:
                    conn.r_pkts += 1
                    conn.r_ip += iplens[j]
                if fl & TCP_URG:
                    conn.urgent += 1
                if wr[j]:
                    conn.wrong += 1
                conn.last_ns = t
                j += 1
            self._schedule(conn)

    def _fast_run(self, conn: _Conn, cols: TcpColumns, runs: RunSums, j: int, e: int) -> bool:
        """Apply plain segments j..e-1 at once (features.tcp_runs); False (nothing changed) if not exact."""
        tcp = conn.tcp
        pos = np.arange(j, e)
        a_side = cols.from_a[j:e]
        plans = []
        for from_a_side in (True, False):
            idx = pos[a_side] if from_a_side else pos[~a_side]
            if not len(idx):
                continue
            side = side_run(cols, idx)
            is_orig = from_a_side == conn.orig_is_a
            ep, peer = (tcp.orig, tcp.resp) if is_orig else (tcp.resp, tcp.orig)
            if side is None or not side_fits(side, ep, peer):
                return False
            plans.append((side, ep, peer))
        events: list[tuple[int, int, int, str]] = []
        for side, ep, peer in plans:
            apply_side(tcp, side, ep, peer, events)
        if events:
            merge_history(tcp, events)
        self._add_run(conn, runs, j, e, int(cols.ts[e - 1]))
        tcp.last_time = conn.last_ns
        return True

    @staticmethod
    def _add_run(conn: _Conn, runs: RunSums, j: int, e: int, last_ns: int) -> None:
        """Packet, byte, URG and wrong-fragment counts of the plain run j..e-1."""
        n_a, ip_a, n_all, ip_all, urg, wrong = runs.between(j, e)
        if conn.orig_is_a:
            conn.o_pkts += n_a; conn.o_ip += ip_a  # noqa: E702
            conn.r_pkts += n_all - n_a; conn.r_ip += ip_all - ip_a  # noqa: E702
        else:
            conn.r_pkts += n_a; conn.r_ip += ip_a  # noqa: E702
            conn.o_pkts += n_all - n_a; conn.o_ip += ip_all - ip_a  # noqa: E702
        conn.urgent += urg
        conn.wrong += wrong
        conn.last_ns = last_ns

    def _may_be_due(self, conn: _Conn, t: int) -> bool:
        """Cheap pre-test of ``_tcp_deadline(conn) <= t``: False only when no timer can be due at ``t``."""
        tcp = conn.tcp
        attempt = tcp.attempt_deadline
        return (conn.last_ns + self._tcp_idle <= t or tcp.close_deadline is not None
                or (attempt is not None and attempt <= t))

    def _tcp_deadline(self, conn: _Conn) -> int:
        tcp = conn.tcp
        deadline = conn.last_ns + self._tcp_idle
        if tcp.close_deadline is not None:
            deadline = min(deadline, tcp.close_deadline + (self._reset if tcp.close_reset else self._close))
        attempt = tcp.attempt_deadline
        if attempt is not None and attempt < deadline and tcp.in_attempt():
            deadline = attempt
        return deadline

    # -- UDP, ICMP, other: aggregation -------------------------------------------------------------------
    def _track_other(self, pk, order, from_a, wrong_s, sp_s, dp_s, starts, ends, keys, groups) -> None:
        sel, lens_g, _ = _group_rows(groups, starts, ends)
        pkts = pk.take(order[sel])
        gid = np.repeat(groups, lens_g)
        ts = pkts["ts_ns"]
        proto = pkts["proto"]
        idle = np.full(len(sel), self._other_idle, dtype=np.int64)
        for p, v in self._idle.items():
            idle[proto == p] = v
        seg = np.ones(len(sel), dtype=bool)
        seg[1:] = (gid[1:] != gid[:-1]) | (ts[1:] - ts[:-1] >= idle[1:])
        seg_starts = np.flatnonzero(seg)
        fa = from_a[sel]
        ipl = pkts["ip_len"].astype(np.int64)
        pay = np.where(proto == 132, 0, pkts["payload_len"].astype(np.int64))  # Zeek: no payload for SCTP
        fa_i = fa.astype(np.int64)
        red = np.add.reduceat
        n_tot = np.diff(np.append(seg_starts, len(sel)))
        n_a = red(fa_i, seg_starts)
        ip_a, ip_tot = red(ipl * fa_i, seg_starts), red(ipl, seg_starts)
        pay_a, pay_tot = red(pay * fa_i, seg_starts), red(pay, seg_starts)
        wrong_n = red(wrong_s[sel].astype(np.int64), seg_starts)
        last_idx = np.append(seg_starts[1:], len(sel)) - 1
        rows = zip(gid[seg_starts].tolist(), ts[seg_starts].tolist(), ts[last_idx].tolist(),
                   fa[seg_starts].tolist(), n_tot.tolist(), n_a.tolist(), ip_tot.tolist(), ip_a.tolist(),
                   pay_tot.tolist(), pay_a.tolist(), wrong_n.tolist(), sp_s[sel][seg_starts].tolist(),
                   dp_s[sel][seg_starts].tolist(), pkts["dst_hi"][seg_starts].tolist(),
                   pkts["dst_lo"][seg_starts].tolist())
        conns = self._conns
        idle_of = self._idle
        for g, t0, t1, first_a, n, na, ipt, ipa, pt, pa, wn, sport, dport, dhi, dlo in rows:
            key = keys[g]
            proto_k = key[0]
            conn = conns.get(key)
            if conn is not None and conn.last_ns + idle_of.get(proto_k, self._other_idle) <= t0:
                self._finish(conn)
                conn = None
            if conn is None:
                flip = flip_new_connection(proto_k, sport, dport, False, False, dhi, dlo)
                conn = self._new_conn(key, first_a, flip, t0)
            nb, ipb, pb = n - na, ipt - ipa, pt - pa
            if conn.orig_is_a:
                n_orig, n_resp, first_is_orig = na, nb, first_a
                conn.o_pkts += na; conn.o_ip += ipa; conn.o_pay += pa  # noqa: E702
                conn.r_pkts += nb; conn.r_ip += ipb; conn.r_pay += pb  # noqa: E702
            else:
                n_orig, n_resp, first_is_orig = nb, na, not first_a
                conn.o_pkts += nb; conn.o_ip += ipb; conn.o_pay += pb  # noqa: E702
                conn.r_pkts += na; conn.r_ip += ipa; conn.r_pay += pa  # noqa: E702
            if proto_k == IPPROTO_UDP:
                self._udp_history(conn, n_orig, n_resp, first_is_orig)
            conn.wrong += wn
            conn.last_ns = t1
            self._schedule(conn)

    @staticmethod
    def _udp_history(conn: _Conn, n_orig: int, n_resp: int, first_is_orig: bool) -> None:
        """Zeek's UDP letters: 'D' once for the originator, 'd' once for the responder, in first-seen order."""
        hist = conn.hist
        letters = ("D", "d") if first_is_orig else ("d", "D")
        for letter in letters:
            if (n_orig if letter == "D" else n_resp) and letter not in hist:
                hist.append(letter)

    def _add_continuations(self, rows: _Columns, wrong: np.ndarray) -> None:
        """Non-first fragments: bytes of their datagram's connection, not packets (Zeek reassembles)."""
        names = ("src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport", "dport", "icmp_type", "icmp_code",
                 "payload_len")
        for sh, sl, dh, dl, proto, sport, dport, itype, icode, size, w in zip(
                *(rows[name].tolist() for name in names), wrong.tolist()):
            if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                table = ICMP4_COUNTERPART if proto == IPPROTO_ICMP else ICMP6_COUNTERPART
                sport, cp = itype, int(table[itype])
                dport = icode if cp < 0 else cp
            conn = (self._conns.get(_KEY.pack(proto, sh, sl, sport, dh, dl, dport))
                    or self._conns.get(_KEY.pack(proto, dh, dl, dport, sh, sl, sport)))
            if conn is None:
                self.counters["fragments_orphaned"] += 1
                continue
            from_orig = conn.endpoints()[0][:2] == (sh, sl)
            if from_orig:
                conn.o_ip += size
                conn.o_pay += size if proto != IPPROTO_TCP else 0
            else:
                conn.r_ip += size
                conn.r_pay += size if proto != IPPROTO_TCP else 0
            conn.wrong += int(w)

    # -- timers, eviction ----------------------------------------------------------------------------
    def _deadline(self, conn: _Conn) -> int:
        if conn.tcp is not None:
            return self._tcp_deadline(conn)
        return conn.last_ns + self._idle.get(conn.proto, self._other_idle)

    def _schedule(self, conn: _Conn) -> None:
        """Push the connection's next event (deadline, or active-timeout report) unless already due sooner."""
        at = self._deadline(conn)
        if self._active is not None and conn.period_ns + self._active < at:
            at = conn.period_ns + self._active
        if at < conn.heap_at:
            conn.heap_at = at
            self._heap_seq += 1
            heapq.heappush(self._heap, (at, self._heap_seq, conn.key, conn.uid))

    def _expire(self, now: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, key, uid = heapq.heappop(heap)
            conn = self._conns.get(key)
            if conn is None or conn.uid is not uid or at != conn.heap_at:
                continue  # finished, or rescheduled since
            conn.heap_at = math.inf
            if self._deadline(conn) <= now:
                self._finish(conn)
                continue
            if self._active is not None and conn.period_ns + self._active <= now:
                self._interim(conn, conn.period_ns + self._active)
            self._schedule(conn)

    def _evict(self) -> None:
        """Free 10% of the cap: unanswered attempts first (oldest first), then the least recently active."""
        target = max(1, self.settings.max_connections // 10)
        conns = list(self._conns.values())
        attempts = [c for c in conns if (c.tcp.in_attempt() if c.tcp else c.r_pkts == 0)]
        attempts.sort(key=lambda c: c.last_ns)
        victims = attempts[:target]
        self.counters["evicted_attempts"] += len(victims)
        if len(victims) < target:
            chosen = {id(c) for c in victims}
            rest = sorted((c for c in conns if id(c) not in chosen), key=lambda c: c.last_ns)
            extra = rest[: target - len(victims)]
            self.counters["evicted_other"] += len(extra)
            victims += extra
        for conn in victims:
            self._finish(conn)

    # -- records -------------------------------------------------------------------------------------
    # A finished (or interim) period is first noted as a row of plain values; ``_emit`` turns all rows of a
    # batch into records at once, so address text and Community IDs are computed in bulk (see flow_ids).
    def _finish(self, conn: _Conn) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        self.counters["records"] += 1
        self._note(conn, self._end_ns(conn), False)

    @staticmethod
    def _end_ns(conn: _Conn) -> int:
        """Zeek stops a TCP connection's clock once both sides closed (the last ACK is not duration)."""
        return conn.tcp.last_time if conn.tcp is not None else conn.last_ns

    def _interim(self, conn: _Conn, at: int) -> None:
        """Active timeout: report the period so far and start a new one on the same connection (same uid)."""
        self._note(conn, self._end_ns(conn), True)
        if conn.tcp is not None:
            conn.reported = conn.tcp.sizes()
        conn.o_pkts = conn.o_ip = conn.r_pkts = conn.r_ip = conn.o_pay = conn.r_pay = 0
        conn.urgent = conn.wrong = 0
        conn.period_ns = at
        self.counters["interim_records"] += 1

    def _note(self, conn: _Conn, end_ns: int, interim: bool) -> None:
        tcp = conn.tcp
        if tcp is not None:
            o_size, r_size = tcp.sizes()
            o_bytes, r_bytes = o_size - conn.reported[0], r_size - conn.reported[1]
            state, history = tcp.conn_state(), tcp.history_str()
        else:
            o_bytes, r_bytes, history = conn.o_pay, conn.r_pay, "".join(conn.hist)
            state = self._udp_state(conn) if conn.proto == IPPROTO_UDP else "OTH"
        self._done.append((conn.key, conn.orig_is_a, conn.uid, min(conn.period_ns, end_ns), end_ns, o_bytes,
                           r_bytes, state, history or "-", conn.o_pkts, conn.o_ip, conn.r_pkts, conn.r_ip,
                           conn.wrong, conn.urgent, interim))

    def _emit(self) -> list[ConnectionRecord]:
        """Records of the rows noted since the last call, in the order they were noted."""
        done = self._done
        if not done:
            return []
        self._done = []
        (keys, orig_is_a, uids, starts, ends, o_bytes, r_bytes, states, histories, o_pkts, o_ip, r_pkts, r_ip,
         wrong, urgent, interim) = zip(*done)
        k = np.frombuffer(b"".join(keys), dtype=_KEY_DTYPE)
        a_orig = np.array(orig_is_a, dtype=bool)
        proto = k["proto"]
        o_hi, o_lo, o_p = (np.where(a_orig, k[a], k[b]) for a, b in (("ah", "bh"), ("al", "bl"), ("ap", "bp")))
        r_hi, r_lo, r_p = (np.where(a_orig, k[b], k[a]) for a, b in (("ah", "bh"), ("al", "bl"), ("ap", "bp")))
        text = self._addresses.text
        orig_h, resp_h = text(o_hi, o_lo), text(r_hi, r_lo)
        cids = self._community_ids(k, proto, o_hi, o_lo, o_p, r_hi, r_lo, r_p)
        names = [_PROTO_NAMES.get(p, "unknown_transport") for p in proto.tolist()]
        records = [ConnectionRecord(t0 / _NS, uid, oh, op, rh, rp, name, (t1 - t0) / _NS, ob, rb, st, hist, opk,
                                    oip, rpk, rip, 0, "-", cid, "other", wr, urg, t1 / _NS)
                   for uid, oh, op, rh, rp, name, t0, t1, ob, rb, st, hist, opk, oip, rpk, rip, cid, wr, urg
                   in zip(uids, orig_h, o_p.tolist(), resp_h, r_p.tolist(), names, starts, ends, o_bytes, r_bytes,
                          states, histories, o_pkts, o_ip, r_pkts, r_ip, cids, wrong, urgent)]
        if any(interim):
            for rec, is_interim in zip(records, interim):
                if is_interim:
                    rec.extra["interim"] = "T"
        return records

    def _community_ids(self, k: np.ndarray, proto: np.ndarray, o_hi: np.ndarray, o_lo: np.ndarray,
                       o_p: np.ndarray, r_hi: np.ndarray, r_lo: np.ndarray, r_p: np.ndarray) -> list[str]:
        """Community IDs: in bulk from the key (whose endpoint A sorts first, ICMP ports already paired as
        Community ID pairs them), per record for the odd key mixing an IPv4-mapped and a true IPv6 address."""
        a_v4 = (k["ah"] == 0) & (k["al"] >> np.uint64(32) == _V4_PREFIX)
        b_v4 = (k["bh"] == 0) & (k["bl"] >> np.uint64(32) == _V4_PREFIX)
        odd = a_v4 != b_v4
        cids = community_ids(proto, k["ah"], k["al"], k["ap"], k["bh"], k["bl"], k["bp"], ~a_v4)
        get = self._addresses.get
        for i in np.flatnonzero(odd).tolist():
            _, orig_packed = get(int(o_hi[i]), int(o_lo[i]))
            _, resp_packed = get(int(r_hi[i]), int(r_lo[i]))
            cids[i] = community_id(int(proto[i]), orig_packed, int(o_p[i]), resp_packed, int(r_p[i]))
        return cids

    @staticmethod
    def _udp_state(conn: _Conn) -> str:
        if conn.o_pkts:
            return "SF" if conn.r_pkts else "S0"
        return "SHR" if conn.r_pkts else "OTH"
