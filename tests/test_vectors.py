"""Records -> FEATURE_DTYPE rows: basic features, window order vs row order, ids, labels, streaming state."""

from __future__ import annotations

import numpy as np
import pytest

from features.records import ConnectionRecord
from features.schema import FEATURE_DTYPE, UNKNOWN_CODE, decode_category
from features.vectors import FeatureBuilder, feature_table


def rec(ts, resp_h="10.0.0.2", resp_p=80, *, orig_h="10.0.0.1", orig_p=40000, proto="tcp", state="SF",
        duration=0.0, **kw) -> ConnectionRecord:
    return ConnectionRecord(ts=ts, uid=f"C{ts}", orig_h=orig_h, orig_p=orig_p, resp_h=resp_h, resp_p=resp_p,
                            proto=proto, duration=duration, orig_bytes=kw.pop("orig_bytes", 0),
                            resp_bytes=kw.pop("resp_bytes", 0), conn_state=state, history="",
                            orig_pkts=1, orig_ip_bytes=40, resp_pkts=0, resp_ip_bytes=0, **kw)


def test_basic_features():
    r = rec(1.0, "10.0.0.1", 40000, state="S0", duration=1.25, orig_bytes=300, resp_bytes=7,
            wrong_fragment=2, urgent=1)
    row = feature_table([r]).features[0]
    assert row["duration"] == 1.25
    assert decode_category("protocol_type", row["protocol_type"]) == "tcp"
    assert decode_category("service", row["service"]) == "other"  # port 40000 has no name
    assert decode_category("flag", row["flag"]) == "S0"
    assert (row["src_bytes"], row["dst_bytes"]) == (300, 7)
    assert (row["land"], row["wrong_fragment"], row["urgent"]) == (1, 2, 1)  # same host and port: land


def test_unknown_categories_become_the_unknown_code():
    row = feature_table([rec(1.0, proto="47", state="XYZ")]).features[0]
    assert row["protocol_type"] == UNKNOWN_CODE and row["flag"] == UNKNOWN_CODE
    assert decode_category("service", row["service"]) == "other"


def test_rows_keep_input_order_while_windows_follow_end_time():
    # given in reverse: the connection ending last comes first
    late = rec(0.0, duration=1.5, orig_p=3)  # ends 1.5
    mid = rec(0.5, duration=0.5, orig_p=2)  # ends 1.0
    early = rec(0.2, orig_p=1)  # ends 0.2
    table = feature_table([late, mid, early])
    assert [i["orig_p"] for i in table.ids] == [3, 2, 1]
    assert table.features["count"].tolist() == [3.0, 2.0, 1.0]


def test_end_ts_from_the_tracker_wins_over_ts_plus_duration():
    a = rec(0.0, duration=0.0, end_ts=10.0)
    b = rec(5.0)
    table = feature_table([a, b])
    assert table.features["count"].tolist() == [1.0, 1.0]  # a ends at 10: b (at 5) is 5 s earlier


def test_ids_and_labels():
    records = [rec(1.0, extra={"label": "Benign"}), rec(2.0, extra={"label": "Malicious"})]
    table = feature_table(records, source="x.log")
    assert table.features.dtype == FEATURE_DTYPE
    assert table.ids[0] == {"uid": "C1.0", "orig_h": "10.0.0.1", "orig_p": 40000, "resp_h": "10.0.0.2",
                            "resp_p": 80, "proto": "tcp", "ts": 1.0}
    assert table.labels.tolist() == ["Benign", "Malicious"]
    assert table.source == "x.log"
    assert feature_table(records, label_column="detailedlabel").labels is None
    assert feature_table([rec(1.0)]).labels is None


def test_builder_keeps_window_state_between_calls():
    builder = FeatureBuilder(time_window=2.0, host_window=100)
    builder.add([rec(1.0)])
    second = builder.add([rec(1.5)])
    assert second.features["count"][0] == 2 and second.features["dst_host_count"][0] == 2


def test_empty_input():
    table = feature_table([])
    assert len(table) == 0 and table.features.dtype == FEATURE_DTYPE and table.labels is None


@pytest.mark.parametrize("host_window", [1, 3])
def test_host_window_length_is_configurable(host_window):
    table = feature_table([rec(float(t)) for t in range(5)], host_window=host_window)
    assert table.features["dst_host_count"][-1] == host_window
    assert np.all(table.features["count"] <= 2)  # 1 s apart: at most two in the 2 s window


def test_feed_returns_rows_in_emission_order_once_the_watermark_passes():
    a, b, c = rec(1.0, orig_p=1), rec(5.0, orig_p=2), rec(4.0, orig_p=3)  # ends 1.0, 5.0, 4.0
    builder = FeatureBuilder()
    first = builder.feed([a, b], watermark=3.0)  # a is due; b may still be preceded by a later record
    assert [i["orig_p"] for i in first.ids] == [1] and builder.pending() == 1
    second = builder.feed([c], watermark=6.0)  # c ends before b: the windows see c first
    assert [i["orig_p"] for i in second.ids] == [2, 3]
    assert second.features["count"].tolist() == [2.0, 1.0]  # b: c and itself in (3, 5]; c: alone in (2, 4]
    whole = feature_table([a, b, c])
    assert np.array_equal(np.concatenate([first.features, second.features]), whole.features)


def test_feed_waits_for_a_group_of_min_group_records():
    builder = FeatureBuilder(min_group=3)
    assert len(builder.feed([rec(1.0), rec(2.0)], watermark=10.0)) == 0 and builder.pending() == 2
    assert len(builder.feed([rec(3.0)], watermark=10.0)) == 3 and builder.pending() == 0
    assert len(builder.feed([rec(11.0)], watermark=10.0)) == 0  # not due: ends after the watermark
    assert len(builder.add([])) == 1  # the end of input flushes whatever is held
