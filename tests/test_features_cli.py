"""``netwarden features`` and the pipeline behind it: input detection, a crafted capture through every
stage with hand-computed window features, every output format, errors as one line."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from sensor import config
from sensor import pipeline
from sensor.pipeline import InputError, detect_input, iter_input, load_input
from tests.conftest import ROOT

ATTACKER, CLIENT, VICTIM = "10.0.0.9", "10.0.0.8", "10.0.0.2"
# the console script's code, run by this interpreter (``python -m sensor.cli`` would load cli.py twice)
NETWARDEN = [sys.executable, "-c", "import sys; from sensor.cli import main; sys.exit(main())", "features"]
VERTICAL_SCAN = "attacks/slips/port-scans/vertical/conn.log"


def _frame(t: float, pkt):
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
    frame.time = t
    return frame


@pytest.fixture(scope="module")
def crafted_pcap(tmp_path_factory):
    """#1 S0 to :80 at 0.0; #2 REJ to :80 at 0.1/0.11; #3 S0 to :25 at 0.2; #4 UDP DNS SF 0.3/0.31;
    #5 a land SYN at 10.0 (same host and port both ends)."""
    pkts = [
        _frame(0.0, IP(src=ATTACKER, dst=VICTIM) / TCP(sport=1000, dport=80, flags="S", seq=100)),
        _frame(0.1, IP(src=ATTACKER, dst=VICTIM) / TCP(sport=1001, dport=80, flags="S", seq=200)),
        _frame(0.11, IP(src=VICTIM, dst=ATTACKER) / TCP(sport=80, dport=1001, flags="RA", seq=0, ack=201)),
        _frame(0.2, IP(src=ATTACKER, dst=VICTIM) / TCP(sport=1002, dport=25, flags="S", seq=300)),
        _frame(0.3, IP(src=CLIENT, dst=VICTIM) / UDP(sport=5000, dport=53) / (b"q" * 30)),
        _frame(0.31, IP(src=VICTIM, dst=CLIENT) / UDP(sport=53, dport=5000) / (b"r" * 60)),
        _frame(10.0, IP(src="10.0.0.5", dst="10.0.0.5") / TCP(sport=139, dport=139, flags="S", seq=5)),
    ]
    path = tmp_path_factory.mktemp("pcap") / "crafted.pcap"
    wrpcap(str(path), pkts)
    return path


def _rows_by_port(table) -> dict[tuple[int, int], dict]:
    out = {}
    for ids, row in zip(table.ids, table.features):
        out[(ids["orig_p"], ids["resp_p"])] = dict(zip(row.dtype.names, row.tolist()))
    return out


def test_crafted_capture_window_features(crafted_pcap):
    data = load_input(crafted_pcap, config.defaults())
    rows = _rows_by_port(data.table)
    assert len(rows) == 5
    rej = rows[(1001, 80)]  # window: #1 (S0, ends 0.0) and itself
    assert (rej["count"], rej["srv_count"]) == (2, 2)
    assert (rej["serror_rate"], rej["rerror_rate"]) == (0.5, 0.5)
    assert (rej["srv_serror_rate"], rej["srv_rerror_rate"]) == (0.5, 0.5)
    assert (rej["same_srv_rate"], rej["diff_srv_rate"], rej["srv_diff_host_rate"]) == (1.0, 0.0, 0.0)
    smtp = rows[(1002, 25)]  # #1 #2 and itself, one of them smtp
    assert smtp["count"] == 3 and smtp["srv_count"] == 1
    assert smtp["serror_rate"] == pytest.approx(2 / 3) and smtp["rerror_rate"] == pytest.approx(1 / 3)
    assert smtp["same_srv_rate"] == pytest.approx(1 / 3) and smtp["diff_srv_rate"] == pytest.approx(2 / 3)
    dns = rows[(5000, 53)]  # the last to end: all four to the victim
    assert dns["count"] == 4 and dns["srv_count"] == 1
    assert (dns["serror_rate"], dns["rerror_rate"], dns["same_srv_rate"]) == (0.5, 0.25, 0.25)
    assert dns["dst_host_count"] == 4 and dns["dst_host_srv_count"] == 1
    assert dns["dst_host_same_src_port_rate"] == 0.25
    assert (dns["dst_host_serror_rate"], dns["dst_host_rerror_rate"]) == (0.5, 0.25)
    assert (dns["src_bytes"], dns["dst_bytes"]) == (30, 60)
    land = rows[(139, 139)]
    assert land["land"] == 1 and land["count"] == 1  # 10 s later: alone in its window
    assert [r["land"] for k, r in rows.items() if k != (139, 139)] == [0, 0, 0, 0]


def test_capture_rows_stream_as_connections_finish(tmp_path, monkeypatch):
    """Four one-packet UDP flows 1000 s apart, read a packet at a time: each row comes out once the
    watermark (latest packet - longest timeout) has passed its end, not at the end of the file."""
    path = tmp_path / "spread.pcap"
    wrpcap(str(path), [_frame(1000.0 * k, IP(src=ATTACKER, dst=VICTIM) / UDP(sport=1000 + k, dport=53))
                       for k in range(4)])
    monkeypatch.setattr(pipeline, "WINDOW_GROUP", 1)
    chunks = list(iter_input(path, config.from_mapping({"reader": {"batch_size": 1}})))
    assert [[i["orig_p"] for i in c.table.ids] for c in chunks] == [[1000], [1001], [1002], [1003]]
    assert all([r.orig_p for r in c.records] == [i["orig_p"] for i in c.table.ids] for c in chunks)
    whole = load_input(path, config.defaults()).table  # one batch: the same rows
    assert whole.features.tolist() == [row for c in chunks for row in c.table.features.tolist()]


def test_detects_inputs_by_content(data_dir, crafted_pcap, tmp_path):
    gz = tmp_path / "capture.bin"
    gz.write_bytes(gzip.compress(crafted_pcap.read_bytes()))
    assert detect_input(crafted_pcap) == "capture"
    assert detect_input(gz) == "capture"
    assert detect_input(data_dir / "attacks/pcaphunt/hs-icmpScan.pcapng") == "capture"
    assert detect_input(data_dir / VERTICAL_SCAN) == "zeek"
    assert detect_input(data_dir / "attacks/slips/port-scans/horizontal/conn.log") == "zeek"
    assert detect_input(data_dir / "nsl-kdd/KDDTest+.txt") == "kdd"
    assert detect_input(data_dir / "kddcup99/kddcup.data_10_percent.gz") == "kdd"
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n")
    with pytest.raises(InputError, match="not a pcap/pcapng capture, Zeek conn.log or NSL-KDD"):
        detect_input(text)
    with pytest.raises(InputError, match="cannot read"):
        detect_input(tmp_path / "missing.pcap")


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*NETWARDEN, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_kdd_format_has_the_extractor_columns(crafted_pcap, data_dir):
    header = (data_dir / "kdd99extractor/doc/extractor_output_header.txt").read_text().strip().split(",")
    rows = list(csv.reader(io.StringIO(run_cli(str(crafted_pcap)).stdout)))
    assert len(rows) == 5
    assert all(len(r) == len(header) - 1 for r in rows)  # the header's trailing "label" only when labelled
    by_port = {(r[header.index("src_port")], r[header.index("dst_port")]): r for r in rows}
    rej = dict(zip(header, by_port[("1001", "80")]))
    assert (rej["protocol_type"], rej["service"], rej["flag"]) == ("tcp", "http", "REJ")
    assert (rej["count"], rej["rerror_rate"], rej["src_ip"], rej["dst_ip"]) == ("2", "0.5", ATTACKER, VICTIM)
    assert float(rej["conn_end_time"]) == pytest.approx(0.11)


def test_kdd_format_appends_labels(data_dir):
    rows = list(csv.reader(io.StringIO(run_cli(str(data_dir / "labelled-conn-logs/stratosphere/008-zeek-mixed"
                                                       "/data/conn.log.labeled")).stdout)))
    assert len(rows) == 5663 and len(rows[0]) == 34 and rows[0][-1] == "Benign"


def test_csv_and_jsonl_formats(crafted_pcap):
    rows = list(csv.DictReader(io.StringIO(run_cli("--format", "csv", str(crafted_pcap)).stdout)))
    assert len(rows) == 5 and {"uid", "ts", "orig_h", "count", "dst_host_srv_rerror_rate"} <= set(rows[0])
    objs = [json.loads(line) for line in run_cli("--format", "jsonl", str(crafted_pcap)).stdout.splitlines()]
    assert [o["orig_p"] for o in objs] == [int(r["orig_p"]) for r in rows]
    assert {o["flag"] for o in objs} == {"S0", "REJ", "SF"}
    assert all(isinstance(o["count"], int) for o in objs)


@pytest.mark.parametrize("fmt", ["zeek", "zeek-json"])
def test_conn_log_formats_read_back(fmt, crafted_pcap, tmp_path):
    from features.zeeklog import read_conn_log

    out = tmp_path / f"conn.{fmt}"
    run_cli("--format", fmt, "-o", str(out), str(crafted_pcap))
    records = read_conn_log(out)
    assert sorted(r.conn_state for r in records) == ["REJ", "S0", "S0", "S0", "SF"]
    # the written log is itself an input, and gives the same features
    assert run_cli(str(out)).stdout == run_cli(str(crafted_pcap)).stdout
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it


def test_conn_log_and_kdd_inputs(data_dir):
    assert len(run_cli(str(data_dir / VERTICAL_SCAN)).stdout.splitlines()) == 50
    out = run_cli("--format", "csv", str(data_dir / "nsl-kdd/KDDTest+.txt")).stdout.splitlines()
    assert len(out) == 22545 and out[0].startswith("file,line,duration") and out[1].endswith(",neptune")


def test_errors_are_one_line(data_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    for args in ([str(notes)], ["--format", "zeek", str(data_dir / "nsl-kdd/KDDTest+.txt")],
                 [str(tmp_path / "missing.pcap")], ["-o", str(tmp_path / "no/such/dir/out"), str(notes)]):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 1 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("netwarden: error:")


def test_output_to_dev_null_and_no_heavy_imports(crafted_pcap):
    code = ("import sys; from sensor.cli import main; "
            f"rc = main(['features', '--format', 'kdd', '-o', '/dev/null', {str(crafted_pcap)!r}]); "
            "heavy = [m for m in ('tensorflow', 'torch', 'sklearn', 'keras') if m in sys.modules]; "
            "print(rc, heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "0 []", proc.stderr
