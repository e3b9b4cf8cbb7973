"""Crafted packet batches for every conn_state, role flips, reuse, ICMP pairing, timeouts, eviction, fragments."""

from __future__ import annotations

import dataclasses

import communityid
import numpy as np
import pytest

from features.flow_ids import community_id, community_ids
from features.tracker import ConnectionTracker, TrackerSettings
from sensor.packets import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, addr_to_halves, empty_batch
from sensor.sources import open_source

S, A, F, R, P = TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, TCP_PSH
C, SRV = ("10.0.0.1", 40000), ("10.0.0.2", 80)


def batch(*pkts: dict) -> np.ndarray:
    """Rows from dicts: t (s), src/dst (addr, port), flags, seq, ack, plen, proto, itype, icode, frag..."""
    b = empty_batch(len(pkts))
    for i, p in enumerate(pkts):
        (sa, sp), (da, dp) = p["src"], p["dst"]
        row = b[i]
        row["ts_ns"] = int(p["t"] * 1e9)
        row["ip_version"] = 6 if ":" in sa else 4
        row["proto"] = p.get("proto", 6)
        row["src_hi"], row["src_lo"] = addr_to_halves(sa)
        row["dst_hi"], row["dst_lo"] = addr_to_halves(da)
        row["sport"], row["dport"] = sp, dp
        plen = p.get("plen", 0)
        hdr = {6: 40, 17: 28}.get(int(row["proto"]), 28)
        row["payload_len"], row["ip_len"] = plen, p.get("ip_len", plen + hdr)
        row["tcp_flags"], row["tcp_seq"], row["tcp_ack"] = p.get("flags", 0), p.get("seq", 0), p.get("ack", 0)
        row["tcp_win"] = p.get("win", 1000)
        row["icmp_type"], row["icmp_code"] = p.get("itype", 0), p.get("icode", 0)
        for k in ("frag_id", "frag_offset", "frag_mf", "is_fragment"):
            row[k] = p.get(k, 0)
    return b


def tcp(t, src, dst, flags, seq=0, ack=0, plen=0):
    return dict(t=t, src=src, dst=dst, flags=flags, seq=seq, ack=ack, plen=plen)


def run(*pkts, settings: TrackerSettings | None = None):
    tr = ConnectionTracker(settings, uid_seed=1)
    recs = tr.process(batch(*pkts)) + tr.flush()
    return sorted(recs, key=lambda r: r.ts), tr


HANDSHAKE = (tcp(0.0, C, SRV, S, 100), tcp(0.1, SRV, C, S | A, 500, 101), tcp(0.2, C, SRV, A, 101, 501))

CASES = {
    "S0": ([tcp(0, C, SRV, S, 100)], "S"),
    "REJ": ([tcp(0, C, SRV, S, 100), tcp(0.1, SRV, C, R | A, 0, 101)], "Sr"),
    "S1": (list(HANDSHAKE), "ShA"),
    "SF": ([*HANDSHAKE, tcp(0.3, C, SRV, P | A, 101, 501, 10), tcp(0.4, SRV, C, P | A, 501, 111, 20),
            tcp(0.5, C, SRV, F | A, 111, 521), tcp(0.6, SRV, C, F | A, 521, 112), tcp(0.7, C, SRV, A, 112, 522)],
           "ShADdFf"),
    "S2": ([*HANDSHAKE, tcp(0.3, C, SRV, F | A, 101, 501)], "ShAF"),
    "S3": ([*HANDSHAKE, tcp(0.3, SRV, C, F | A, 501, 101)], "ShAf"),
    "RSTO": ([*HANDSHAKE, tcp(0.3, C, SRV, R | A, 101, 501)], "ShAR"),
    "RSTR": ([*HANDSHAKE, tcp(0.3, SRV, C, R | A, 501, 101)], "ShAr"),
    "RSTOS0": ([tcp(0, C, SRV, S, 100), tcp(0.1, C, SRV, R, 101)], "SR"),
    "RSTRH": ([tcp(0, SRV, C, S | A, 500, 101), tcp(0.1, SRV, C, R, 501)], "^hr"),
    "SH": ([tcp(0, C, SRV, S, 100), tcp(0.1, C, SRV, F | A, 101, 0)], "SF"),
    "SHR": ([tcp(0, SRV, C, F | A, 500, 101)], "^f"),
    "OTH": ([tcp(0, C, SRV, P | A, 100, 500, 10)], "D"),
}


@pytest.mark.parametrize("state", sorted(CASES))
def test_each_conn_state_with_its_history(state):
    pkts, history = CASES[state]
    recs, _ = run(*pkts)
    assert len(recs) == 1
    assert (recs[0].conn_state, recs[0].history) == (state, history)
    assert (recs[0].orig_h, recs[0].orig_p) == C  # flipped cases still name the client as originator


def test_sf_counts_payload_packets_and_duration():
    rec = run(*CASES["SF"][0])[0][0]
    assert (rec.orig_bytes, rec.resp_bytes) == (10, 20)
    assert (rec.orig_pkts, rec.resp_pkts) == (5, 3)
    assert rec.duration == pytest.approx(0.6)  # Zeek stops the clock when both sides closed


def test_midstream_connection_is_one_record():
    pkts = [tcp(i * 0.01, C if i % 2 == 0 else SRV, SRV if i % 2 == 0 else C, P | A,
                1000 + i * 50 if i % 2 == 0 else 9000, 9000 if i % 2 == 0 else 1000 + (i + 1) * 50, 50 * (i % 2 == 0))
            for i in range(40)]
    recs, _ = run(*pkts)
    assert len(recs) == 1
    assert recs[0].conn_state == "OTH"
    assert recs[0].orig_pkts + recs[0].resp_pkts == 40


def test_reused_tuple_after_close_is_a_new_connection():
    first = CASES["SF"][0]
    again = [tcp(1.0, C, SRV, S, 7000), tcp(1.1, SRV, C, S | A, 8000, 7001)]
    recs, _ = run(*first, *again)
    assert [r.conn_state for r in recs] == ["SF", "S1"]
    assert recs[0].uid != recs[1].uid
    assert recs[1].history == "Sh"


def test_icmp_echo_request_and_reply_are_one_connection():
    echo = dict(proto=1, itype=8, plen=56)
    recs, _ = run(dict(t=0, src=("10.0.0.1", 0), dst=("10.0.0.2", 0), **echo),
                  dict(t=0.01, src=("10.0.0.2", 0), dst=("10.0.0.1", 0), proto=1, itype=0, plen=56),
                  dict(t=0.02, src=("10.0.0.2", 0), dst=("10.0.0.1", 0), proto=1, itype=3, icode=1, plen=28))
    echo_rec, unreach = recs
    assert (echo_rec.proto, echo_rec.orig_p, echo_rec.resp_p, echo_rec.orig_pkts, echo_rec.resp_pkts) == \
        ("icmp", 8, 0, 1, 1)
    assert (echo_rec.orig_bytes, echo_rec.conn_state) == (56, "OTH")
    assert (unreach.orig_h, unreach.orig_p, unreach.resp_p) == ("10.0.0.2", 3, 1)


def test_icmp_community_ids_match_reference_package():
    """ICMP ids are hashed in bulk from the tracker's key: echo pairs, one-way messages, v4 and v6."""
    v4, v6 = ("10.0.0.9", 0), ("10.0.0.1", 0)
    a6, b6 = ("2001:db8::9", 0), ("2001:db8::1", 0)
    recs, _ = run(dict(t=0, src=v4, dst=v6, proto=1, itype=8, plen=56),
                  dict(t=0.01, src=v6, dst=v4, proto=1, itype=0, plen=56),
                  dict(t=0.02, src=v4, dst=v6, proto=1, itype=3, icode=3, plen=28),
                  dict(t=0.03, src=a6, dst=b6, proto=58, itype=128, plen=8),
                  dict(t=0.04, src=a6, dst=b6, proto=58, itype=135, plen=24),
                  dict(t=0.05, src=b6, dst=a6, proto=58, itype=1, icode=4, plen=48))
    package = communityid.CommunityID(seed=0)
    assert len(recs) == 5
    for r in recs:
        make = communityid.FlowTuple.make_icmp if r.proto == "icmp" and "." in r.orig_h \
            else communityid.FlowTuple.make_icmp6
        assert r.community_id == package.calc(make(r.orig_h, r.resp_h, r.orig_p, r.resp_p)), r


def test_udp_inactivity_timeout_splits_and_is_configurable():
    dns = [dict(t=0, src=C, dst=("10.0.0.2", 53), proto=17, plen=30),
           dict(t=61, src=C, dst=("10.0.0.2", 53), proto=17, plen=30)]
    assert len(run(*dns)[0]) == 2
    assert len(run(*dns, settings=TrackerSettings(udp_inactivity_timeout=120))[0]) == 1


def test_attempt_timeout_ends_unanswered_syn():
    recs, _ = run(tcp(0, C, SRV, S, 100), tcp(3, C, SRV, S, 100), tcp(9, C, SRV, S, 100))
    assert [r.orig_pkts for r in recs] == [2, 1]
    assert {r.conn_state for r in recs} == {"S0"}


def test_active_timeout_emits_interim_records():
    pkts = [dict(t=float(i), src=C, dst=("10.0.0.2", 53), proto=17, plen=10) for i in range(25)]
    recs, tr = run(*pkts, settings=TrackerSettings(active_timeout=10))
    interim = [r for r in recs if r.extra.get("interim") == "T"]
    assert len(interim) == 2 and len(recs) == 3
    assert len({r.uid for r in recs}) == 1
    assert sum(r.orig_pkts for r in recs) == 25
    assert tr.counters["interim_records"] == 2


def test_syn_flood_evicts_attempts_and_keeps_answered_connections():
    flood = [tcp(1 + i * 1e-4, (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000),
                 ("10.0.0.2", 80), S, i) for i in range(5000)]
    tr = ConnectionTracker(TrackerSettings(max_connections=1000), uid_seed=1)
    out = tr.process(batch(*HANDSHAKE))
    out += tr.process(batch(*flood))
    assert len(tr) <= 1000
    assert tr.counters["evicted_attempts"] >= 4000 and tr.counters["evicted_other"] == 0
    rest = tr.flush()
    assert len(out) + len(rest) == 5001  # every connection reported, evicted or not
    assert [r.conn_state for r in rest if r.orig_p == 40000] == ["S1"]


def test_overlapping_fragment_counts_as_wrong_fragment():
    base = dict(src=C, dst=("10.0.0.2", 53), proto=17, frag_id=7, is_fragment=1)
    good = [dict(t=0, plen=1472, ip_len=1500, frag_mf=1, **base),
            dict(t=0.001, plen=100, ip_len=120, frag_offset=1480, **base)]
    rec = run(*good)[0][0]
    assert (rec.wrong_fragment, rec.orig_pkts, rec.orig_ip_bytes, rec.orig_bytes) == (0, 1, 1600, 1572)
    overlap = [*good, dict(t=0.002, plen=100, ip_len=120, frag_offset=1400, **base)]
    assert run(*overlap)[0][0].wrong_fragment == 1


def test_wall_clock_advance_expires_idle_connections():
    tr = ConnectionTracker(uid_seed=1)
    assert tr.process(batch(dict(t=0, src=C, dst=("10.0.0.2", 53), proto=17, plen=5))) == []
    assert tr.advance(int(30e9)) == []
    assert len(tr.advance(int(61e9))) == 1 and len(tr) == 0


@pytest.mark.parametrize("proto, a, b", [(6, "10.0.0.1", "10.0.0.2"), (17, "2001:db8::9", "2001:db8::1")])
def test_community_id_matches_reference_package(proto, a, b):
    import ipaddress
    make = communityid.FlowTuple.make_tcp if proto == 6 else communityid.FlowTuple.make_udp
    expected = communityid.CommunityID(seed=0).calc(make(a, b, 40000, 80))
    ours = community_id(proto, ipaddress.ip_address(a).packed, 40000, ipaddress.ip_address(b).packed, 80)
    assert ours == expected


def test_bulk_community_ids_match_reference_package():
    """The tracker's bulk hashing: every family/protocol shape, ports 0 and equal endpoints included."""
    import ipaddress
    rng = np.random.default_rng(3)

    def address(v6):
        return ipaddress.ip_address((int(rng.integers(1, 2**63)) << 64) + int(rng.integers(0, 2**63)) if v6
                                    else int(rng.integers(1, 2**32)))

    flows = []
    for i in range(200):
        v6, proto = i % 2 == 1, [6, 17, 132, 47, 0][i % 5]
        a = address(v6)
        b = a if i % 7 == 0 else address(v6)
        pa, pb = (int(rng.integers(0, 65536)), int(rng.integers(0, 65536))) if proto in (6, 17, 132) else (0, 0)
        if (int(a), pa) > (int(b), pb):
            a, b, pa, pb = b, a, pb, pa
        flows.append((proto, a, pa, b, pb))

    def halves(addr):
        n = int(addr) if addr.version == 6 else (0xFFFF << 32) | int(addr)
        return n >> 64, n & (2**64 - 1)

    col = lambda f, dtype: np.array([f(x) for x in flows], dtype=dtype)  # noqa: E731
    got = community_ids(col(lambda x: x[0], np.uint8), col(lambda x: halves(x[1])[0], np.uint64),
                        col(lambda x: halves(x[1])[1], np.uint64), col(lambda x: x[2], np.int64),
                        col(lambda x: halves(x[3])[0], np.uint64), col(lambda x: halves(x[3])[1], np.uint64),
                        col(lambda x: x[4], np.int64), col(lambda x: x[1].version == 6, bool))
    package = communityid.CommunityID(seed=0)
    for (proto, a, pa, b, pb), ours in zip(flows, got):
        if proto in (6, 17):
            make = communityid.FlowTuple.make_tcp if proto == 6 else communityid.FlowTuple.make_udp
            assert ours == package.calc(make(str(b), str(a), pb, pa))  # either direction: same id
        assert ours == community_id(proto, b.packed, pb, a.packed, pa)


def test_batch_boundaries_do_not_change_records(data_dir):
    trace = data_dir / "zeek" / "traces" / "ssh" / "ssh.pcap"

    def records(batch_size):
        tr = ConnectionTracker(uid_seed=3)
        out = [r for b in open_source(trace, batch_size=batch_size) for r in tr.process(b)] + tr.flush()
        return sorted((r.orig_h, r.orig_p, r.resp_p, r.conn_state, r.history, r.orig_bytes, r.resp_pkts)
                      for r in out)

    assert records(7) == records(65536)


def test_one_packet_batches_give_the_records_of_one_batch():
    """Live capture with tiny ring blocks: a long connection read a packet at a time is the same record
    (every field) as read in one batch; per-batch work must not depend on earlier batches' packets."""
    data = [tcp(0.3 + k / 1000, C, SRV, A | P, 101 + 10 * k, 501, 10) if k % 3
            else tcp(0.3 + k / 1000, SRV, C, A, 501, 101 + 10 * k) for k in range(300)]
    pkts = [*HANDSHAKE, *data, tcp(0.9, C, SRV, F | A, 3101, 501), tcp(0.91, SRV, C, F | A, 501, 3102)]
    rows = batch(*pkts)

    def records(size):
        tr = ConnectionTracker(uid_seed=4)
        return [dataclasses.astuple(r) for i in range(0, len(rows), size) for r in tr.process(rows[i:i + size])] \
            + [dataclasses.astuple(r) for r in tr.flush()]

    whole = records(len(rows))
    assert len(whole) == 1 and whole[0][10:13] == ("SF", "ShAaDFf", 203)
    assert records(1) == whole


# -- fast paths: identical records to the per-packet path ------------------------------------------------
MODES = {"numpy runs": dict(min_run=1), "lean steps": dict(min_run=10**9), "default": {}}


def _records(batches, **attrs):
    """All record fields (uid included: same seed, same creation order) and counters."""
    tr = ConnectionTracker(TrackerSettings(max_connections=500, active_timeout=30.0), uid_seed=4)
    for name, value in attrs.items():
        setattr(tr, name, value)
    recs = [r for b in batches for r in tr.process(b)] + tr.flush()
    return [dataclasses.astuple(r) for r in recs], tr.counters


def _fast_runs_taken(monkeypatch) -> list[bool]:
    taken: list[bool] = []
    original = ConnectionTracker._fast_run

    def spy(self, *args):
        taken.append(original(self, *args))
        return taken[-1]

    monkeypatch.setattr(ConnectionTracker, "_fast_run", spy)
    return taken


def _assert_same_in_every_mode(batches, monkeypatch) -> list[bool]:
    reference = _records(batches, fast_paths=False)
    taken = _fast_runs_taken(monkeypatch)
    for mode, attrs in MODES.items():
        assert _records(batches, **attrs) == reference, mode
    return taken


@pytest.mark.parametrize("trace", ["zeek/traces/tcp/retransmit-fast009.pcap", "zeek/traces/ssh/ssh.pcap",
                                   "zeek/traces/tcp/missing-syn.pcap", "zeek/traces/wikipedia.pcap",
                                   "zeek/traces/ipv6-fragmented-dns.pcap",
                                   "attacks/stopddos/pkt.TCP.synflood.spoofed.pcap"])
def test_fast_paths_give_the_per_packet_records_on_real_captures(data_dir, trace, monkeypatch):
    batches = list(open_source(data_dir / trace, batch_size=512))
    _assert_same_in_every_mode(batches, monkeypatch)


@pytest.mark.parametrize("seed", range(8))
def test_fast_paths_give_the_per_packet_records_on_random_segments(seed, monkeypatch):
    """Retransmissions, gaps, old ACKs, zero windows, URG, sequence numbers wrapping past 2**32 (and past
    2**31 from the ISN), mid-stream starts and interleaved connections, cut into odd-sized batches."""
    rng = np.random.default_rng(seed)
    pkts, t = [], 0.0
    for port in (40000, 40001):
        client = ("10.0.0.1", port)
        c_isn = int(rng.choice([100, 2**32 - 3000, 2**31 - 500]))
        s_isn = int(rng.integers(0, 2**32))
        if seed % 3:
            pkts += [tcp(t, client, SRV, S, c_isn), tcp(t + 0.01, SRV, client, S | A, s_isn, c_isn + 1),
                     tcp(t + 0.02, client, SRV, A, c_isn + 1, s_isn + 1)]
            t += 0.03
        nxt = {client: c_isn + 1, SRV: s_isn + 1}
        for _ in range(300):
            side, other = (client, SRV) if rng.random() < 0.6 else (SRV, client)
            plen = int(rng.choice([0, 0, 100, 1460]))
            seq, r = nxt[side], rng.random()
            if r < 0.1:
                seq -= int(rng.choice([100, 1460, 2920]))  # retransmission or reordering
            elif r < 0.13:
                seq += 1460  # a lost segment
            ack = nxt[other] - (int(rng.integers(1, 3000)) if rng.random() < 0.2 else 0)
            flags = A | (P if plen else 0) | (TCP_URG if rng.random() < 0.01 else 0)
            pkts.append(dict(t=t, src=side, dst=other, flags=flags, seq=seq % 2**32, ack=ack % 2**32, plen=plen,
                             win=0 if rng.random() < 0.01 else 65535))
            nxt[side] = max(nxt[side], seq + plen)
            t += float(rng.exponential(0.01))
        if seed % 2:
            pkts.append(tcp(t, client, SRV, F | A, nxt[client] % 2**32, nxt[SRV] % 2**32))
    pkts.sort(key=lambda p: p["t"])
    b = batch(*pkts)
    taken = _assert_same_in_every_mode([b[i:i + 97] for i in range(0, len(b), 97)], monkeypatch)
    if seed % 3:  # mid-stream, old ACKs fall below the first one seen (Zeek's underflow): the path declines
        assert any(taken)  # the numpy path really ran (and where it declined, the lean steps did)


def test_lone_syn_becomes_a_full_session_when_answered():
    """A SYN alone in its batch is kept compact; the SYN-ACK in the next batch continues it exactly."""
    tr = ConnectionTracker(uid_seed=1)
    assert tr.process(batch(tcp(0, C, SRV, S, 100))) == []
    tr.process(batch(tcp(0.1, SRV, C, S | A, 500, 101), tcp(0.2, C, SRV, A, 101, 501)))
    (rec,) = tr.flush()
    assert (rec.conn_state, rec.history, rec.orig_pkts, rec.resp_pkts) == ("S1", "ShA", 2, 1)


@pytest.mark.parametrize("resent", [201, 101])  # the newest segment again (lag 0) or an older one (lag > 0)
def test_retransmission_opening_a_batch_still_gets_its_letter(resent, monkeypatch):
    first = batch(*HANDSHAKE, tcp(0.3, C, SRV, P | A, 101, 501, 100), tcp(0.4, C, SRV, P | A, 201, 501, 100))
    acks = [tcp(0.6 + i * 0.01, SRV if i % 2 else C, C if i % 2 else SRV, A, 501 if i % 2 else 301,
                301 if i % 2 else 501) for i in range(20)]
    second = batch(tcp(0.5, C, SRV, P | A, resent, 501, 100), *acks)
    _assert_same_in_every_mode([first, second], monkeypatch)
    tr = ConnectionTracker(uid_seed=1)
    tr.process(first)
    tr.process(second)
    assert tr.flush()[0].history == "ShADTa"  # the resent segment is the connection's first retransmission
