"""Fast path for runs of plain TCP segments inside an established connection.

Why: most TCP packets are plain ACK/data segments (no SYN, FIN or RST) of connections whose two endpoints
are already ESTABLISHED or PARTIAL. For those, Zeek's per-packet machinery (``features.tcp_state``) changes
no endpoint state; it only

- adds 'D'/'A' (or 'd'/'a') the first time a side sends data / a pure ACK,
- advances the side's highest sequence end ``last`` (a running maximum in sequence space) and counts a
  retransmission when a data segment does not advance it ('T'/'t' at the 1st, 10th, 100th ...),
- advances the peer's highest acknowledgement ``ack`` (another running maximum),
- counts zero windows ('W'/'w', logarithmic).

So a run of such packets is a handful of numpy reductions (running maxima unwrapped to 64-bit relative to
the run's first segment, first occurrences, counts) plus a little Python to merge the result into the
session. Anything that would make the shortcut inexact falls back to the per-packet path: a zero window, a
sequence/ack span of 2**30 or more (wrap-around ambiguity), an ACK of 0, an ACK below the peer's initial
sequence number (Zeek's underflow rule), or a first segment that does not advance ``last`` (its
retransmission status depends on older state). ``tests/test_tracker_states.py`` checks on real captures that
the fast and the per-packet path give identical records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.tcp_state import ESTABLISHED, HIST_ACK, HIST_DATA, PARTIAL, Endpoint, TcpSession, seq_delta
from sensor.packets import TCP_ACK

MIN_RUN = 128  # shorter runs are cheaper per packet than the numpy set-up; tests lower it to force the path
_LIMIT = 1 << 30  # spans below this keep every pairwise seq_delta exact in 64-bit arithmetic
_HALF, _MOD = 1 << 31, 1 << 32
_OPEN = (ESTABLISHED, PARTIAL)


@dataclass(slots=True)
class TcpColumns:
    """The TCP packets of a batch in grouped order, as numpy columns (int64 where arithmetic happens)."""

    ts: np.ndarray
    flags: np.ndarray
    seq_end: np.ndarray  # (seq + payload) mod 2**32: a plain segment's sequence end
    ack: np.ndarray
    plen: np.ndarray
    win: np.ndarray
    from_a: np.ndarray  # bool: sent by the key's lower endpoint


@dataclass(slots=True)
class SideRun:
    """One direction's share of a run: state-independent aggregates, positions are batch-global."""

    first_end: int  # sequence end of the side's first segment in the run
    first_has_data: bool
    u_max: int  # highest sequence end, relative to first_end
    rxmit: list[int]  # positions of later data segments that do not advance the running maximum
    first_data: int  # position of the first data segment, -1 if none
    first_pure_ack: int  # position of the first pure ACK, -1 if none
    ack_first: int  # first acknowledgement number (-1 when no segment carries ACK)
    v_min: int  # acknowledgement span relative to ack_first
    v_max: int


def plain_run_ends(cols: TcpColumns, group_start: np.ndarray, idle_ns: int) -> np.ndarray:
    """For each packet, the end (exclusive) of the maximal run of fast-path candidates it starts.

    A candidate has no SYN/FIN/RST and follows its group's previous packet by less than the inactivity
    timeout (a longer gap starts a new connection: the per-packet path handles it). Non-candidates map to
    their own position.
    """
    n = len(cols.ts)
    gap_ok = np.ones(n, dtype=bool)
    gap_ok[1:] = (cols.ts[1:] - cols.ts[:-1]) < idle_ns
    plain = ((cols.flags & 0x7) == 0) & (gap_ok | group_start)
    stops = np.flatnonzero(~plain | group_start)
    stops = np.append(stops, n)
    idx = np.arange(n)
    after = stops[np.searchsorted(stops, idx, side="right")]
    return np.where(plain, after, idx)


def open_session(tcp: TcpSession) -> bool:
    """Whether plain segments leave every endpoint state alone (both sides open, neither closed)."""
    o, r = tcp.orig, tcp.resp
    return (o.state in _OPEN and r.state in _OPEN and not o.did_close and not r.did_close
            and tcp.close_deadline is None)


def side_run(cols: TcpColumns, idx: np.ndarray) -> SideRun | None:
    """Aggregate one direction's packets ``idx`` of a run; None when the shortcut would not be exact."""
    if not cols.win[idx].all():
        return None
    ends = cols.seq_end[idx]
    lens = cols.plen[idx]
    u = (ends - ends[0] + _HALF) % _MOD - _HALF
    prefix_max = np.maximum.accumulate(u)
    if max(-int(u.min()), int(prefix_max[-1])) >= _LIMIT:
        return None
    has_data = lens > 0
    rx = np.nonzero(has_data[1:] & (u[1:] <= prefix_max[:-1]))[0] + 1
    has_ack = (cols.flags[idx] & TCP_ACK) != 0
    pure = has_ack & ~has_data
    ack_first, v_min, v_max = -1, 0, 0
    if has_ack.any():
        acks = cols.ack[idx[has_ack]]
        if not acks.all():
            return None  # Zeek's ack == 0 special case
        v = (acks - acks[0] + _HALF) % _MOD - _HALF
        v_min, v_max = int(v.min()), int(v.max())
        if max(-v_min, v_max) >= _LIMIT:
            return None
        ack_first = int(acks[0])
    return SideRun(int(ends[0]), bool(has_data[0]), int(prefix_max[-1]), idx[rx].tolist(),
                   int(idx[has_data.argmax()]) if has_data.any() else -1,
                   int(idx[pure.argmax()]) if pure.any() else -1, ack_first, v_min, v_max)


def side_fits(side: SideRun, ep: Endpoint, peer: Endpoint) -> bool:
    """State-dependent exactness checks (see the module docstring)."""
    lag = seq_delta(ep.last, side.first_end)
    if lag > 0 or lag <= -_LIMIT:
        return False
    if side.ack_first >= 0:
        k = seq_delta(peer.ack, side.ack_first)
        s = seq_delta(side.ack_first, peer.start)
        if not (-_LIMIT < k < _LIMIT and s + side.v_min >= 0 and s + side.v_max < _HALF):
            return False
    return True


def apply_side(tcp: TcpSession, side: SideRun, ep: Endpoint, peer: Endpoint,
               events: list[tuple[int, int, int, str]]) -> None:
    """Advance ``ep``/``peer`` past the run; history letters go to ``events`` as (pos, order, mask, letter)."""
    lag = seq_delta(ep.last, side.first_end)
    rxmit = side.rxmit
    if lag == 0 and side.first_has_data:
        rxmit = [side.first_data, *rxmit]  # the first segment repeats the highest end seen: a retransmission
    if side.u_max > lag:
        ep.update_last((ep.last + side.u_max - lag) % _MOD)
    if side.ack_first >= 0:
        k = seq_delta(peer.ack, side.ack_first)
        if side.v_max > k:
            peer.update_ack((peer.ack + side.v_max - k) % _MOD)
    shift = 0 if ep.is_orig else 16
    if side.first_data >= 0 and not tcp.hist_seen & (HIST_DATA << shift):
        events.append((side.first_data, 0, HIST_DATA << shift, "D" if ep.is_orig else "d"))
    if side.first_pure_ack >= 0 and not tcp.hist_seen & (HIST_ACK << shift):
        events.append((side.first_pure_ack, 0, HIST_ACK << shift, "A" if ep.is_orig else "a"))
    if rxmit:
        before = ep.rxmt_cnt
        ep.rxmt_cnt += len(rxmit)
        while ep.rxmt_thresh <= ep.rxmt_cnt:
            events.append((rxmit[ep.rxmt_thresh - before - 1], 1, 0, "T" if ep.is_orig else "t"))
            ep.rxmt_thresh *= 10


def merge_history(tcp: TcpSession, events: list[tuple[int, int, int, str]]) -> None:
    """Append the run's letters in packet order (per packet: D/A before T, as Zeek checks them)."""
    events.sort()
    for _, _, mask, letter in events:
        tcp.hist_seen |= mask
        tcp.history.append(letter)


class RunSums:
    """Prefix sums over the grouped TCP packets, so a run's packet/byte counts cost O(1) in Python."""

    __slots__ = ("_n_a", "_ip_a", "_ip", "_urg", "_wrong")

    def __init__(self, ip_len: np.ndarray, from_a: np.ndarray, urgent: np.ndarray, wrong: np.ndarray) -> None:
        def prefix(values: np.ndarray) -> list[int]:
            out = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum(values, out=out[1:])
            return out.tolist()

        ip = ip_len.astype(np.int64)
        self._n_a, self._ip_a, self._ip = prefix(from_a), prefix(np.where(from_a, ip, 0)), prefix(ip)
        self._urg, self._wrong = prefix(urgent), prefix(wrong)

    def between(self, j: int, e: int) -> tuple[int, int, int, int, int, int]:
        """(packets from A, IP bytes from A, packets, IP bytes, URG packets, wrong fragments) of j..e-1."""
        return (self._n_a[e] - self._n_a[j], self._ip_a[e] - self._ip_a[j], e - j, self._ip[e] - self._ip[j],
                self._urg[e] - self._urg[j], self._wrong[e] - self._wrong[j])
