"""Zeek's TCP endpoint state machine, history letters, payload sizes and conn_state, one packet at a time.

This mirrors Zeek's ``TCPSessionAdapter::Process`` (src/packet_analysis/protocol/tcp), ``TCP_Endpoint``
and the ``conn_state`` function of ``base/protocols/conn/main.zeek`` closely enough that conn_state,
history, orig/resp bytes agree with Zeek's own baselines. Only the parts that influence conn.log are kept:
no reassembly (so no content-gap letters 'G'/'g' and no missed_bytes), no checksum validation (Zeek run
with ``-C``), no window-recision weirds.

Why per packet: history and conn_state are order-dependent (a SYN after a FIN, a RST before any ACK ...),
so this is the one part of the tracker that cannot be a numpy reduction. The tracker feeds it only TCP
packets; the code keeps to local variables and small integers to stay cheap.
"""

from __future__ import annotations

import re

from sensor.packets import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

# Endpoint states (Zeek's TCP_ENDPOINT_*).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

_M32 = 0xFFFFFFFF
_HALF = 0x80000000
TOO_LARGE_SEQ_DELTA = 1048576

# History masks (Zeek's HIST_*); the responder's are shifted by 16 as in TCP_Endpoint::CheckHistory.
HIST_SYN, HIST_FIN, HIST_RST, HIST_FIN_RST, HIST_DATA, HIST_ACK, HIST_MULTI = (1 << i for i in range(7))

_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")


def seq_delta(a: int, b: int) -> int:
    """Signed 32-bit difference a - b, as Zeek's seq_delta."""
    d = (a - b) & _M32
    return d - 0x100000000 if d & 0x80000000 else d


class Endpoint:
    __slots__ = ("state", "prev_state", "start", "last", "seq_wraps", "ack", "ack_wraps", "fin_cnt",
                 "did_close", "hist_syn", "hist_fin", "hist_rst", "rxmt_cnt", "rxmt_thresh", "win0_cnt",
                 "win0_thresh", "is_orig", "peer")

    def __init__(self, is_orig: bool) -> None:
        self.state = self.prev_state = INACTIVE
        self.start = self.last = self.ack = 0
        self.seq_wraps = self.ack_wraps = 0
        self.fin_cnt = 0
        self.did_close = False
        self.hist_syn = self.hist_fin = self.hist_rst = 0
        self.rxmt_cnt = self.win0_cnt = 0
        self.rxmt_thresh = self.win0_thresh = 1
        self.is_orig = is_orig
        self.peer: Endpoint = self

    def set_state(self, new: int) -> None:
        if new != self.state:
            self.prev_state = self.state
            self.state = new

    def update_last(self, seq: int) -> None:
        if seq < self.last and seq_delta(seq, self.last) > 0:
            self.seq_wraps += 1
        self.last = seq

    def update_ack(self, seq: int) -> None:
        if seq < self.ack and seq_delta(seq, self.ack) > 0:
            self.ack_wraps += 1
        self.ack = seq

    def init_seqs(self, start: int, last: int) -> None:
        self.start = self.ack = start
        self.last = last

    def relative(self, cur: int, last: int, wraps: int) -> tuple[int, bool]:
        """Zeek's get_relative_seq: (relative sequence number, underflow)."""
        delta = seq_delta(cur, last)
        if delta < 0:
            if wraps and cur > last:
                wraps -= 1
        elif delta > 0 and cur < last:
            wraps += 1
        if wraps == 0:
            rel = seq_delta(cur, self.start)
            return rel, rel < 0
        return ((wraps << 32) | cur) - self.start, False

    def size(self) -> int:
        """Payload bytes from sequence numbers (TCP_Endpoint::Size)."""
        if (self.prev_state == SYN_SENT and self.state == RESET and self.peer.state == INACTIVE
                and self.ack not in (self.start, (self.start + 1) & _M32)):
            return 0  # half-open connection discovered and aborted: sequence numbers mean nothing
        last64 = (self.seq_wraps << 32) | self.last
        ack64 = (self.ack_wraps << 32) | self.ack
        size = (last64 if last64 > ack64 else ack64) - self.start
        size &= 0xFFFFFFFFFFFFFFFF
        if size:
            size -= 1  # the SYN octet (assumed for partial connections too)
        if self.fin_cnt and size:
            size -= 1  # the FIN octet
        return size


class TcpSession:
    """Zeek's per-connection TCP analysis, fed one packet at a time in capture order."""

    __slots__ = ("orig", "resp", "history", "hist_seen", "last_time", "attempt_deadline", "close_deadline",
                 "close_reset", "flips")

    def __init__(self) -> None:
        self.orig = Endpoint(True)
        self.resp = Endpoint(False)
        self.orig.peer, self.resp.peer = self.resp, self.orig
        self.history: list[str] = []
        self.hist_seen = 0
        self.last_time = 0.0
        self.attempt_deadline: float | None = None  # first-SYN time + attempt timeout, while unanswered
        self.close_deadline: float | None = None  # set when Zeek would schedule the delete timer
        self.close_reset = False
        self.flips = 0

    @classmethod
    def from_syn(cls, seq: int, win: int, t: int, attempt_deadline: int) -> TcpSession:
        """The session ``packet`` makes of the originator's bare SYN (``SynAttempt.applies``) as its first
        segment, set directly: most TCP connections start this way and the general path costs 3x more."""
        tcp = cls()
        orig = tcp.orig
        orig.state = SYN_SENT
        orig.start = orig.ack = seq
        orig.last = (seq + 1) & _M32
        tcp.hist_seen = HIST_SYN  # hist_syn stays 0: the SYN's own relative sequence number
        tcp.history.append("S")
        if win == 0:
            tcp._zero_window(orig)
        tcp.last_time = t
        tcp.attempt_deadline = attempt_deadline
        return tcp

    # -- history -------------------------------------------------------------------------------------
    def _check(self, ep: Endpoint, mask: int, code: str) -> bool:
        """Conn::CheckHistory: add the letter the first time; True if it had been seen before."""
        if not ep.is_orig:
            mask <<= 16
            code = code.lower()
        if self.hist_seen & mask:
            return True
        self.hist_seen |= mask
        self.history.append(code)
        return False

    def _add(self, ep: Endpoint, code: str) -> None:
        self.history.append(code if ep.is_orig else code.lower())

    def _rxmit(self, ep: Endpoint) -> None:
        ep.rxmt_cnt += 1
        if ep.rxmt_cnt == ep.rxmt_thresh:
            self.history.append("T" if ep.is_orig else "t")
            ep.rxmt_thresh *= 10

    def _zero_window(self, ep: Endpoint) -> None:
        ep.win0_cnt += 1
        if ep.win0_cnt == ep.win0_thresh:
            self.history.append("W" if ep.is_orig else "w")
            ep.win0_thresh *= 10

    def flip(self) -> None:
        """Connection::FlipRoles: swap endpoints, mark the history with '^'."""
        self.orig, self.resp = self.resp, self.orig
        self.orig.is_orig, self.resp.is_orig = True, False
        self.history.append("^")
        self.flips += 1

    # -- reuse -----------------------------------------------------------------------------------------
    def is_reuse(self, flags: int, seq: int) -> bool:
        """A SYN that starts a new connection on this 5-tuple (TCPSessionAdapter::IsReuse)."""
        if not flags & TCP_SYN:
            return False
        orig, resp = self.orig, self.resp
        conn_orig = orig
        if flags & TCP_ACK:
            if orig.state != INACTIVE:
                return False
            conn_orig = resp
        if not (orig.did_close or resp.did_close):
            if seq == conn_orig.start:
                return False
            if not flags & TCP_ACK and conn_orig.state == SYN_ACK_SENT and resp.state == INACTIVE \
                    and seq == resp.start:
                return False
        return True

    # -- the packet ------------------------------------------------------------------------------------
    def packet(self, is_orig: bool, flags: int, seq: int, ack: int, length: int, win: int, t: float,
               attempt_timeout: float) -> None:
        ep = self.orig if is_orig else self.resp
        peer = ep.peer
        syn, fin, rst, ackf = flags & TCP_SYN, flags & TCP_FIN, flags & TCP_RST, flags & TCP_ACK

        seg_len = 0 if rst else length
        if syn:
            seg_len += 1
        if fin:
            seg_len += 1
        end = (seq + seg_len) & _M32

        # init_endpoint
        state = ep.state
        if state == INACTIVE:
            if syn:
                ep.init_seqs(seq, end)
            else:
                ep.init_seqs((seq - 1) & _M32, seq)
        elif syn and (
                (state in (SYN_SENT, SYN_ACK_SENT) and seq != ep.start)
                or state in (ESTABLISHED, PARTIAL)
                or (state == RESET and ep.prev_state == INACTIVE)):
            ep.init_seqs(seq, end)

        # update_history
        bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
        if bits > 1:
            if fin and rst:
                self._check(ep, HIST_FIN_RST, "I")
            else:
                self._check(ep, HIST_MULTI, "Q")
        elif bits == 1:
            rel_seq, _ = ep.relative(seq, ep.last, ep.seq_wraps)  # only SYN/FIN/RST letters need it
            if syn:
                code = "H" if ackf else "S"
                if self._check(ep, HIST_SYN, code) and rel_seq != ep.hist_syn:
                    self._add(ep, code)
                ep.hist_syn = rel_seq
            elif fin:
                if self._check(ep, HIST_FIN, "F") and rel_seq + length != ep.hist_fin:
                    self._add(ep, "F")
                ep.hist_fin = rel_seq + length
            else:
                if self._check(ep, HIST_RST, "R") and rel_seq != ep.hist_rst:
                    self._add(ep, "R")
                ep.hist_rst = rel_seq
        elif length:
            self._check(ep, HIST_DATA, "D")
        elif ackf:
            self._check(ep, HIST_ACK, "A")

        # update_window: only the zero-window letter matters for conn.log
        if win == 0 and not rst and peer.state != CLOSED and ep.state != RESET:
            self._zero_window(ep)

        if not (self.orig.did_close and self.resp.did_close):
            self.last_time = t
        if fin:
            ep.fin_cnt += 1

        if ackf:
            if peer.state == INACTIVE:
                s = (ack - 1) & _M32
                peer.init_seqs(s, s)
            else:
                # peer.relative(ack, peer.ack, peer.ack_wraps)'s underflow test, inlined (hot path)
                peer_ack = peer.ack
                delta_ack = ((ack - peer_ack + _HALF) & _M32) - _HALF
                wraps = peer.ack_wraps
                if delta_ack < 0:
                    if wraps and ack > peer_ack:
                        wraps -= 1
                elif delta_ack > 0 and ack < peer_ack:
                    wraps += 1
                underflow = wraps == 0 and ((ack - peer.start + _HALF) & _M32) - _HALF < 0
                if (not underflow and not rst and delta_ack > 0
                        and not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA)):
                    peer.update_ack(ack)

        # update_last_seq
        delta_last = ((end - ep.last + _HALF) & _M32) - _HALF  # seq_delta, inlined
        if (syn or rst) and (delta_last > TOO_LARGE_SEQ_DELTA or delta_last < -TOO_LARGE_SEQ_DELTA):
            pass
        elif fin and ep.last == ((ep.start + 1) & _M32):
            ep.update_last(end)
        elif ep.state == RESET:
            pass
        elif delta_last > 0:
            ep.update_last(end)
        elif length > 0:
            self._rxmit(ep)

        do_close = self._state_machine(ep, peer, is_orig, flags, seq, ack, length, delta_last, t,
                                       attempt_timeout)
        if do_close:
            self._closed(ep, peer)

    def plain_steps(self, orig_is_a: bool, from_a: list[bool], flags: list[int], seqs: list[int],
                    acks: list[int], lens: list[int], wins: list[int], ts: list[int], j: int, e: int) -> None:
        """``packet`` for the segments j..e-1 of the given columns, all without SYN/FIN/RST while both
        endpoints are ESTABLISHED or PARTIAL and neither closed (``features.tcp_runs.open_session``): the
        same effects, minus the branches that cannot fire. The tracker steps short runs of plain segments
        through this (about 3x cheaper per segment, and one call per run)."""
        orig, resp, history = self.orig, self.resp, self.history
        seen = self.hist_seen
        for k in range(j, e):
            is_orig = from_a[k] == orig_is_a
            if is_orig:
                ep, peer, shift = orig, resp, 0
            else:
                ep, peer, shift = resp, orig, 16
            length, fl = lens[k], flags[k]
            if length:
                if not seen & (HIST_DATA << shift):
                    seen |= HIST_DATA << shift
                    history.append("D" if is_orig else "d")
            elif fl & TCP_ACK and not seen & (HIST_ACK << shift):
                seen |= HIST_ACK << shift
                history.append("A" if is_orig else "a")
            if wins[k] == 0:
                self._zero_window(ep)
            if fl & TCP_ACK:
                # the peer's ack update, with relative()'s underflow test inlined: only an advance matters
                ack = acks[k]
                peer_ack = peer.ack
                delta_ack = ((ack - peer_ack + _HALF) & _M32) - _HALF
                if delta_ack > 0 and not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA):
                    wrapped = ack < peer_ack
                    if wrapped or peer.ack_wraps or ((ack - peer.start + _HALF) & _M32) - _HALF >= 0:
                        if wrapped:
                            peer.ack_wraps += 1
                        peer.ack = ack
            end = (seqs[k] + length) & _M32
            last = ep.last
            if ((end - last + _HALF) & _M32) - _HALF > 0:
                if end < last:
                    ep.seq_wraps += 1
                ep.last = end
            elif length > 0:
                self._rxmit(ep)
        self.hist_seen = seen
        self.last_time = ts[e - 1]

    def _state_machine(self, ep: Endpoint, peer: Endpoint, is_orig: bool, flags: int, seq: int, ack: int,
                       length: int, delta_last: int, t: float, attempt_timeout: float) -> bool:
        syn, fin, rst, ackf = flags & TCP_SYN, flags & TCP_FIN, flags & TCP_RST, flags & TCP_ACK
        state = ep.state
        do_close = False
        if state == INACTIVE:
            if syn:
                if is_orig:
                    ep.set_state(SYN_ACK_SENT if ackf else SYN_SENT)
                    if self.attempt_deadline is None:
                        self.attempt_deadline = t + attempt_timeout
                else:
                    if not ackf and peer.state == SYN_ACK_SENT and seq == ep.start:
                        self.flip()  # SYN/SYN-ACK reversal: the peer was the responder all along
                        peer.set_state(ESTABLISHED)
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    ep.set_state(ESTABLISHED)
            do_close = _close_on(ep, fin, rst)
            if ep.state == INACTIVE:
                if not is_orig and length == 0 and self.orig.state == SYN_SENT:
                    pass  # an early ACK of the SYN does not make a partial connection
                elif ackf and peer.state == ESTABLISHED:
                    ep.set_state(ESTABLISHED)  # missed the SYN but saw the SYN-ACK
                else:
                    ep.set_state(PARTIAL)
        elif state in (SYN_SENT, SYN_ACK_SENT):
            do_close = _close_on(ep, fin, rst)
        elif state in (ESTABLISHED, PARTIAL):
            if syn and state == PARTIAL and peer.state == INACTIVE and not ackf:
                ep.set_state(SYN_SENT)
            if fin and not rst:
                ep.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    peer.set_state(CLOSED)  # FIN then RST from the peer was a normal close
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
        elif state == CLOSED:
            if rst and peer.state != CLOSED:
                ep.set_state(RESET)
                if not ep.did_close:
                    do_close = True
                self.close_deadline = t  # Zeek's ResetTimer; the tracker adds the reset linger
                self.close_reset = True
        return do_close

    def _closed(self, ep: Endpoint, peer: Endpoint) -> None:
        """ConnectionClosed: once both sides are done (or one reset), Zeek schedules the delete timer."""
        if ep.did_close:
            return
        ep.did_close = True
        if ep.state == RESET or peer.did_close or peer.state == INACTIVE:
            self.close_deadline = self.last_time
            self.close_reset = ep.state == RESET

    # -- results ---------------------------------------------------------------------------------------
    def in_attempt(self) -> bool:
        return self.orig.state in (SYN_SENT, SYN_ACK_SENT) and self.resp.state == INACTIVE

    def history_str(self) -> str:
        return "".join(self.history)

    def sizes(self) -> tuple[int, int]:
        """(orig, resp) payload bytes from sequence numbers."""
        return self.orig.size(), self.resp.size()

    def conn_state(self) -> str:
        """main.zeek's conn_state() for TCP."""
        os_, rs = self.orig.state, self.resp.state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and self.orig.size() == 0
                                                  and self.resp.size() == 0):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == RESET:
            if r_inactive:
                return "RSTOS0" if _RSTOS0.fullmatch(self.history_str()) else "OTH"
            return "RSTO"
        if rs == CLOSED and os_ == CLOSED:
            return "SF"
        if os_ == CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == SYN_SENT and rs == INACTIVE:
            return "S0"
        if os_ == ESTABLISHED and rs == ESTABLISHED:
            return "S1"
        return "OTH"


class SynAttempt:
    """A TCP connection that so far is a single plain SYN without payload: what a
    ``TcpSession`` would report for it, in one small object.

    Why: in a SYN flood or scan almost every connection is exactly this, and most of a ``TcpSession``'s
    cost (three objects, a history list, the per-packet state machine) and memory is wasted on it. The
    tracker replaces it by the real session (``session()``, the state ``TcpSession.from_syn`` sets) when a
    second packet arrives.
    """

    __slots__ = ("seq", "win", "last_time", "attempt_deadline")
    close_deadline = None
    close_reset = False

    def __init__(self, seq: int, win: int, t: int, attempt_timeout: int) -> None:
        self.seq, self.win = seq, win
        self.last_time = t
        self.attempt_deadline = t + attempt_timeout

    @staticmethod
    def applies(flags: int, length: int) -> bool:
        """A SYN without ACK/FIN/RST or payload: the session would only say 'S' (+ 'W'), SYN_SENT."""
        return flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) == TCP_SYN and length == 0

    def session(self) -> TcpSession:
        return TcpSession.from_syn(self.seq, self.win, self.last_time, self.attempt_deadline)

    @staticmethod
    def in_attempt() -> bool:
        return True

    @staticmethod
    def sizes() -> tuple[int, int]:
        return 0, 0  # the SYN octet is not payload

    def history_str(self) -> str:
        return "S" if self.win else "SW"  # a zero window is counted once, at its first occurrence

    @staticmethod
    def conn_state() -> str:
        return "S0"


def _close_on(ep: Endpoint, fin: int, rst: int) -> bool:
    """A FIN closes, an RST resets the endpoint (RST wins when both are set); either ends the connection."""
    if fin:
        ep.set_state(CLOSED)
    if rst:
        ep.set_state(RESET)
    return bool(fin or rst)
