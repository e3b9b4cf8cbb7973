"""The 19 traffic features on hand-built connection sequences, every value computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from features.windows import (NO_ERROR, REJ_ERROR, SYN_ERROR, TRAFFIC_FEATURES, TrafficWindows,
                              error_classes)

HTTP, SMTP = ("tcp", "http"), ("tcp", "smtp")


def feats(values) -> dict[str, float]:
    return dict(zip(TRAFFIC_FEATURES, values))


def test_every_feature_by_hand():
    """Five connections; the last one's windows: time (0.1, 2.1] drops #1, the 4-connection host window
    keeps it. Columns: end time, destination host, service, source port, error class."""
    w = TrafficWindows(time_window=2.0, host_window=4)
    w.push(0.0, "A", HTTP, 1000, NO_ERROR)  # 1
    w.push(0.5, "A", HTTP, 1001, SYN_ERROR)  # 2
    w.push(1.0, "A", SMTP, 1000, REJ_ERROR)  # 3
    w.push(1.5, "B", HTTP, 1002, SYN_ERROR)  # 4
    f = feats(w.push(2.1, "A", HTTP, 1000, NO_ERROR))  # 5
    # time-based, same host A in (0.1, 2.1]: #2 #3 #5
    assert f["count"] == 3
    assert f["serror_rate"] == pytest.approx(1 / 3)  # #2
    assert f["rerror_rate"] == pytest.approx(1 / 3)  # #3
    assert f["same_srv_rate"] == pytest.approx(2 / 3)  # #2 #5 are http
    assert f["diff_srv_rate"] == pytest.approx(1 / 3)  # #3 smtp
    # time-based, same service http: #2 #4 #5
    assert f["srv_count"] == 3
    assert f["srv_serror_rate"] == pytest.approx(2 / 3)  # #2 #4
    assert f["srv_rerror_rate"] == 0
    assert f["srv_diff_host_rate"] == pytest.approx(1 / 3)  # #4 went to B
    # host-based, last 4 connections to A: #1 #2 #3 #5
    assert f["dst_host_count"] == 4
    assert f["dst_host_same_srv_rate"] == pytest.approx(3 / 4)  # #1 #2 #5
    assert f["dst_host_diff_srv_rate"] == pytest.approx(1 / 4)  # #3
    assert f["dst_host_same_src_port_rate"] == pytest.approx(3 / 4)  # #1 #3 #5 from port 1000
    assert f["dst_host_serror_rate"] == pytest.approx(1 / 4)  # #2
    assert f["dst_host_rerror_rate"] == pytest.approx(1 / 4)  # #3
    # host-based, last 4 http connections: #1 #2 #4 #5
    assert f["dst_host_srv_count"] == 4
    assert f["dst_host_srv_diff_host_rate"] == pytest.approx(1 / 4)  # #4
    assert f["dst_host_srv_serror_rate"] == pytest.approx(2 / 4)  # #2 #4
    assert f["dst_host_srv_rerror_rate"] == 0


def test_host_window_keeps_only_the_last_n_connections_of_a_host():
    w = TrafficWindows(time_window=2.0, host_window=2)
    w.push(0.0, "A", SMTP, 1, REJ_ERROR)
    w.push(10.0, "A", HTTP, 2, NO_ERROR)
    f = feats(w.push(20.0, "A", HTTP, 3, NO_ERROR))
    assert f["count"] == 1 and f["srv_count"] == 1  # the time window has only itself
    assert f["dst_host_count"] == 2  # the smtp connection dropped out
    assert f["dst_host_same_srv_rate"] == 1.0
    assert f["dst_host_rerror_rate"] == 0.0
    assert f["dst_host_same_src_port_rate"] == 0.5


def test_first_connection_counts_itself():
    f = feats(TrafficWindows().push(5.0, "A", HTTP, 1, SYN_ERROR))
    assert f["count"] == f["srv_count"] == f["dst_host_count"] == f["dst_host_srv_count"] == 1
    assert f["serror_rate"] == f["srv_serror_rate"] == f["dst_host_serror_rate"] == 1.0
    assert f["same_srv_rate"] == f["dst_host_same_srv_rate"] == f["dst_host_same_src_port_rate"] == 1.0
    assert f["diff_srv_rate"] == f["srv_diff_host_rate"] == f["dst_host_srv_diff_host_rate"] == 0.0


@pytest.mark.parametrize("gap,expected_count", [(1.999, 2), (2.0, 1), (2.5, 1)])
def test_time_window_is_half_open(gap, expected_count):
    w = TrafficWindows(time_window=2.0)
    w.push(100.0, "A", HTTP, 1, NO_ERROR)
    assert feats(w.push(100.0 + gap, "A", HTTP, 2, NO_ERROR))["count"] == expected_count


def test_time_window_length_is_configurable():
    w = TrafficWindows(time_window=10.0)
    w.push(0.0, "A", HTTP, 1, NO_ERROR)
    assert feats(w.push(9.0, "A", HTTP, 2, NO_ERROR))["count"] == 2


def test_late_record_is_counted_at_the_latest_time_seen():
    w = TrafficWindows(time_window=2.0)
    w.push(0.0, "A", HTTP, 1, NO_ERROR)
    w.push(5.0, "B", HTTP, 2, NO_ERROR)
    f = feats(w.push(1.0, "A", HTTP, 3, NO_ERROR))  # ended at 1.0 but arrives after 5.0
    assert f["count"] == 1  # the connection at 0.0 is outside (3.0, 5.0]
    assert w.clock == 5.0


def test_state_keeps_only_rows_a_window_still_needs():
    w = TrafficWindows(time_window=1.0, host_window=2)
    for i in range(50):
        w.push(float(i), "A", HTTP, i, SYN_ERROR)
    assert len(w.rows) == 2  # the last two of host A and of http: every older one is out of all windows


def test_result_does_not_depend_on_how_the_stream_is_cut():
    rng = np.random.default_rng(7)
    n = 400
    stream = (np.cumsum(rng.exponential(0.05, n)).tolist(), [f"h{k}" for k in rng.integers(0, 6, n)],
              [("tcp", f"s{k}") for k in rng.integers(0, 4, n)], rng.integers(1000, 1004, n).tolist(),
              rng.integers(0, 3, n).tolist())
    whole = TrafficWindows(host_window=5).push_many(*stream)
    cut = TrafficWindows(host_window=5)
    bounds = [0, 1, 2, 50, 51, 230, n]
    parts = [cut.push_many(*(col[a:b] for col in stream)) for a, b in zip(bounds, bounds[1:])]
    assert np.array_equal(np.concatenate(parts), whole)
    one_by_one = TrafficWindows(host_window=5)
    assert np.array_equal(np.array([one_by_one.push(*row) for row in zip(*stream)]), whole)


def test_memory_cap_forgets_least_recently_used_hosts():
    w = TrafficWindows(host_window=2, max_entries=4)
    w.push(0.0, "A", HTTP, 1, NO_ERROR)
    w.push(0.0, "A", HTTP, 2, NO_ERROR)  # host A: 2 entries, service http: 2 entries
    w.push(0.0, "B", SMTP, 3, NO_ERROR)  # 6 entries > 4: host A is the least recently used
    assert w.forgotten == 1
    f = feats(w.push(0.0, "A", HTTP, 4, NO_ERROR))
    assert f["dst_host_count"] == 1  # A starts over
    assert f["count"] == 3  # the time window is not affected


def test_settings_are_checked():
    with pytest.raises(ValueError):
        TrafficWindows(time_window=0)
    with pytest.raises(ValueError):
        TrafficWindows(host_window=100, max_entries=150)


@pytest.mark.parametrize("proto,state,expected", [
    ("tcp", "S0", SYN_ERROR), ("tcp", "S1", SYN_ERROR), ("tcp", "S2", SYN_ERROR), ("tcp", "S3", SYN_ERROR),
    ("tcp", "SH", SYN_ERROR), ("tcp", "SHR", SYN_ERROR),
    ("tcp", "REJ", REJ_ERROR), ("tcp", "RSTO", REJ_ERROR), ("tcp", "RSTOS0", REJ_ERROR),
    ("tcp", "RSTR", REJ_ERROR), ("tcp", "RSTRH", REJ_ERROR),
    ("tcp", "SF", NO_ERROR), ("tcp", "OTH", NO_ERROR),
    ("udp", "S0", NO_ERROR), ("icmp", "OTH", NO_ERROR),
])
def test_error_classes(proto, state, expected):
    from features.schema import encode_category

    codes = (np.array([encode_category("protocol_type", proto)]), np.array([encode_category("flag", state)]))
    assert error_classes(*codes).tolist() == [expected]


def test_states_and_protocols_outside_the_vocabulary_are_no_error():
    from features.schema import UNKNOWN_CODE, encode_category

    tcp, s0 = encode_category("protocol_type", "tcp"), encode_category("flag", "S0")
    proto = np.array([UNKNOWN_CODE, tcp, tcp], dtype="<i2")
    flag = np.array([s0, UNKNOWN_CODE, s0], dtype="<i2")
    assert error_classes(proto, flag).tolist() == [NO_ERROR, NO_ERROR, SYN_ERROR]
