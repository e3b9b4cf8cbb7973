"""Zeek conn.log reading (TSV, JSON, labelled logs, damaged lines) and writing (round trips, Zeek's rules)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from collections import Counter

import pytest

from features.records import ConnectionRecord
from features.vectors import feature_table
from features.zeeklog import (ConnLogError, read_conn_log, sniff, write_conn_json, write_conn_log)

STRATO = "labelled-conn-logs/stratosphere"
LOG_008 = f"{STRATO}/008-zeek-mixed/data/conn.log.labeled"
LOG_010 = f"{STRATO}/010-zeek-mixed/data/conn.log.labeled"
LOG_002_JSON = f"{STRATO}/002-zeek-scenario-port-scanning/conn.log"

HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
          "#open\t2024-01-01-00-00-00\n")
FIELDS = "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes resp_bytes " \
         "conn_state history orig_pkts orig_ip_bytes resp_pkts resp_ip_bytes".split()
TYPES = "time string addr port addr port enum string interval count count string string count count " \
        "count count".split()


def tsv(rows: list[str], fields=FIELDS, types=TYPES, close=True) -> str:
    text = HEADER + "#fields\t" + "\t".join(fields) + "\n#types\t" + "\t".join(types) + "\n"
    text += "".join(r + "\n" for r in rows)
    return text + ("#close\t2024-01-01-00-01-00\n" if close else "")


def as_dicts(records):
    return [dataclasses.asdict(r) for r in records]


@pytest.mark.parametrize("path,rows,labels", [
    (LOG_008, 5663, {"Malicious": 4201, "Benign": 1402, "Background": 60}),
    (LOG_010, 5347, {"Malicious": 3373, "Benign": 1937, "Background": 37}),
])
def test_reads_the_stratosphere_labelled_logs(data_dir, path, rows, labels):
    records = read_conn_log(data_dir / path)
    assert len(records) == rows  # the MANIFEST's flow counts
    assert Counter(r.extra["label"] for r in records) == labels
    first = records[0]
    assert (first.orig_h, first.orig_p, first.resp_h, first.resp_p, first.proto) == (
        ("147.32.81.167", 62771, "40.74.108.123", 443, "tcp") if path == LOG_008 else
        ("167.94.146.67", 27620, "147.32.83.234", 2052, "tcp"))
    assert all(r.end_ts == pytest.approx(r.ts + r.duration) for r in records)


def test_labelled_log_gives_a_labelled_feature_table(data_dir):
    table = feature_table(read_conn_log(data_dir / LOG_008))
    assert len(table) == 5663
    assert table.labels is not None and Counter(table.labels)["Benign"] == 1402


def test_reads_zeek_json_lines(data_dir):
    records = read_conn_log(data_dir / LOG_002_JSON)
    assert len(records) == 4504
    unreachable = next(r for r in records if r.uid == "CG03th2rfWi0ctENra")  # no duration/history keys
    assert (unreachable.proto, unreachable.orig_p, unreachable.resp_p) == ("icmp", 3, 3)
    assert (unreachable.duration, unreachable.history, unreachable.orig_ip_bytes) == (0.0, "", 56)
    assert unreachable.kdd_service == "urp_i"
    assert records[0].extra["local_orig"] == "T"


def test_tsv_round_trip_is_exact(data_dir, tmp_path):
    records = read_conn_log(data_dir / LOG_008)
    out = tmp_path / "conn.log"
    with open(out, "w") as fh:
        write_conn_log(records, fh, feature_table(records).features)
    assert as_dicts(read_conn_log(out)) == as_dicts(records)


def test_json_round_trip_is_exact(data_dir, tmp_path):
    records = read_conn_log(data_dir / LOG_002_JSON)
    out = tmp_path / "conn.json"
    with open(out, "w") as fh:
        write_conn_json(records, fh)
    assert as_dicts(read_conn_log(out)) == as_dicts(records)


def test_written_tsv_follows_zeeks_layout_and_unset_rules(tmp_path):
    rec = ConnectionRecord(ts=1.5, uid="CAbc", orig_h="10.0.0.1", orig_p=1234, resp_h="10.0.0.2", resp_p=80,
                           proto="tcp", duration=0.0, orig_bytes=0, resp_bytes=0, conn_state="S0", history="",
                           orig_pkts=1, orig_ip_bytes=44, resp_pkts=0, resp_ip_bytes=0, urgent=2,
                           extra={"label": "Malicious"})
    buf = io.StringIO()
    write_conn_log([rec], buf)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "#separator \\x09" and lines[-1].startswith("#close\t")
    fields = lines[6].split("\t")[1:]
    types = lines[7].split("\t")[1:]
    row = dict(zip(fields, lines[8].split("\t")))
    assert len(fields) == len(types) == len(lines[8].split("\t"))
    assert fields[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    assert row["ts"] == "1.500000"
    # Zeek leaves duration and byte counts unset for a zero-length connection, history when empty
    assert row["duration"] == row["orig_bytes"] == row["resp_bytes"] == row["history"] == "-"
    assert row["service"] == row["local_orig"] == "-"
    assert row["label"] == "Malicious" and row["kdd.urgent"] == "2" and row["kdd.service"] == "http"
    back = read_conn_log_text(tmp_path, buf.getvalue())[0]
    assert back.urgent == 2 and back.extra == {"label": "Malicious", "local_orig": "-", "local_resp": "-",
                                                "tunnel_parents": "-"}


def read_conn_log_text(tmp_path, text: str, name="conn.log", **kw):
    path = tmp_path / name
    path.write_text(text)
    return read_conn_log(path, **kw)


def test_space_separated_trailing_columns(tmp_path):
    """Stratosphere's older labelled logs join their last columns with runs of spaces."""
    fields = FIELDS + ["tunnel_parents   label   detailedlabel"]
    types = TYPES + ["set[string]   string   string"]
    row = "10.0\tC1\t1.1.1.1\t5\t2.2.2.2\t23\ttcp\t-\t-\t-\t-\tS0\tS\t1\t40\t0\t0\t(empty)   Malicious   PartOfAHorizontalPortScan"
    rec = read_conn_log_text(tmp_path, tsv([row], fields, types))[0]
    assert rec.extra == {"tunnel_parents": "(empty)", "label": "Malicious",
                         "detailedlabel": "PartOfAHorizontalPortScan"}
    assert rec.resp_p == 23 and rec.kdd_service == "telnet"


def test_unset_and_empty_values(tmp_path):
    row = "10.0\tC1\t1.1.1.1\t5\t2.2.2.2\t53\tudp\t(empty)\t-\t-\t-\tS0\t-\t1\t40\t0\t0"
    rec = read_conn_log_text(tmp_path, tsv([row]))[0]
    assert (rec.duration, rec.orig_bytes, rec.history, rec.service) == (0.0, 0, "", "(empty)")


def test_concatenated_logs_and_gzip(tmp_path):
    row1 = "10.0\tC1\t1.1.1.1\t5\t2.2.2.2\t80\ttcp\t-\t1.0\t10\t20\tSF\tShADadFf\t5\t300\t5\t400"
    row2 = "20.0\tC2\t1.1.1.1\t6\t2.2.2.2\t80\ttcp\t-\t2.0\t30\t40\tSF\tShADadFf\t5\t300\t5\t400"
    path = tmp_path / "conn.log.gz"
    path.write_bytes(gzip.compress((tsv([row1]) + tsv([row2])).encode()))
    records = read_conn_log(path)
    assert [r.uid for r in records] == ["C1", "C2"]
    assert records[1].end_ts == 22.0


def test_bad_lines_are_reported_and_skipped(tmp_path):
    good = "10.0\tC1\t1.1.1.1\t5\t2.2.2.2\t80\ttcp\t-\t1.0\t10\t20\tSF\tSh\t5\t300\t5\t400"
    short = "11.0\tC2\t1.1.1.1"
    bad_port = "12.0\tC3\t1.1.1.1\tx\t2.2.2.2\t80\ttcp\t-\t1.0\t10\t20\tSF\tSh\t5\t300\t5\t400"
    skipped = []
    records = read_conn_log_text(tmp_path, tsv([good, short, bad_port]),
                                 on_skip=lambda reason, line: skipped.append((reason, line)))
    assert [r.uid for r in records] == ["C1"]
    assert skipped == [("3 columns where #fields names 17", 10), ("bad value in column id.orig_p", 11)]


def test_bad_json_lines_are_reported(tmp_path):
    ok = {"ts": 1.0, "uid": "C1", "id.orig_h": "1.1.1.1", "id.orig_p": 1, "id.resp_h": "2.2.2.2",
          "id.resp_p": 2, "proto": "udp", "conn_state": "S0"}
    text = json.dumps(ok) + "\n{broken\n" + json.dumps({"id.orig_h": "x"}) + "\n"
    skipped = []
    records = read_conn_log_text(tmp_path, text, on_skip=lambda r, n: skipped.append(n))
    assert len(records) == 1 and skipped == [2, 3]


def test_iso8601_json_timestamps(tmp_path):
    obj = {"ts": "2024-01-01T00:00:01.500000Z", "id.orig_h": "1.1.1.1", "id.orig_p": 1,
           "id.resp_h": "2.2.2.2", "id.resp_p": 2, "proto": "udp"}
    assert read_conn_log_text(tmp_path, json.dumps(obj) + "\n")[0].ts == 1704067201.5


def test_not_a_conn_log(tmp_path):
    with pytest.raises(ConnLogError, match="not a Zeek conn.log"):
        read_conn_log_text(tmp_path, "hello\n")
    dns_fields = ["ts", "uid", "query"]
    with pytest.raises(ConnLogError, match="lacks id.orig_h"):
        read_conn_log_text(tmp_path, tsv([], dns_fields, ["time", "string", "string"]))
    with pytest.raises(ConnLogError, match="cannot read"):
        read_conn_log(tmp_path / "missing.log")


def test_sniff():
    assert sniff(b"#separator \\x09\n") == "tsv"
    assert sniff(b'{"ts":1.0,"id.orig_h":"1.1.1.1"}\n') == "json"
    assert sniff(b'{"name":"x"}\n') is None
    assert sniff(b"0,tcp,http,SF\n") is None
