"""Reading a capture in a child process (``reader.workers: 2``), and also writing in another one (3): the
same batches, skips, errors and output bytes as in one process, and no process left behind however the
main process stops."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace

import numpy as np
import pytest

import features.tracker
from features.flow_ids import UidGenerator
from sensor import config, outputs, readahead, writebehind
from sensor.commands import features as features_cmd
from sensor.sources import CaptureError, FileSource, open_source
from tests.conftest import ROOT
from tests.pcap_craft import Rec, pcap_bytes, write_pcap

CAPTURES = ("attacks/pcaphunt/ps-tcp_syn.pcap", "attacks/pcaphunt/hs-icmpScan.pcapng",
            "attacks/slips/test-cc/test-cc-capture-1.pcap", "ndpi/pcap/badpackets.pcap", "ndpi/pcap/vxlan.pcap")
NETWARDEN = [sys.executable, "-c", "import sys; from sensor.cli import main; sys.exit(main())", "features"]


def _config(tmp_path, workers: int, batch_size: int = 65536, name: str = "cfg.yaml"):
    path = tmp_path / f"{workers}-{batch_size}-{name}"
    path.write_text(f"reader:\n  workers: {workers}\n  batch_size: {batch_size}\nlogging:\n  format: json\n")
    return path


def _corrupt_gzip(path, records: list[Rec], at: float):
    """``records`` as a gzipped pcap with 64 bytes flipped at fraction ``at`` of the compressed file (0:
    right after the 10-byte gzip header)."""
    packed = bytearray(gzip.compress(pcap_bytes(records)))
    i = max(10, int(len(packed) * at))
    packed[i:i + 64] = bytes(b ^ 0x5A for b in packed[i:i + 64])
    path.write_bytes(bytes(packed))
    return path


def _records(data_dir, n: int) -> list[Rec]:
    frame = (data_dir / "attacks/esnet/tcp/control/single_syn.pcap").read_bytes()[40:]
    noise = np.random.default_rng(5).integers(0, 256, 1400 * n, dtype=np.uint8).tobytes()
    return [Rec(frame + noise[k * 1400:(k + 1) * 1400], 1_600_000_000_000_000_000 + k * 1000) for k in range(n)]


@pytest.mark.parametrize("name", CAPTURES)
def test_child_yields_the_sources_batches_and_skips(name, data_dir):
    path = data_dir / name
    own = open_source(path, 500)
    child = readahead.ReadAhead(open_source(path, 500))
    mine, theirs = list(own), list(child)
    assert len(mine) == len(theirs) > 0
    assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(mine, theirs))
    assert child.skips == own.skips and child.format == own.format
    assert readahead.multiprocessing.active_children() == []


def test_late_damage_is_skipped_as_in_the_source(data_dir, tmp_path):
    """Damage in a gzip past the first bytes is a counted skip after the batches before it."""
    late = _corrupt_gzip(tmp_path / "late.pcap.gz", _records(data_dir, 4000), 0.9)
    own, child = open_source(late, 200), readahead.ReadAhead(open_source(late, 200))
    sizes = [[len(b) for b in source] for source in (own, child)]
    assert sizes[0] == sizes[1] and 10 < sum(sizes[0]) < 4000
    assert child.skips == own.skips and child.skips["corrupt_gzip"] == 1


@pytest.mark.parametrize("error", [CaptureError("x.pcap: cannot read (Input/output error)"), KeyError("bug")])
def test_child_errors_are_raised_after_the_same_batches(error, data_dir, monkeypatch):
    """A read error (or a bug) in the middle of the file: the batches before it, then the same exception."""
    real = FileSource.__iter__

    def failing(self):
        for k, batch in enumerate(real(self)):
            if k == 3:
                raise error
            yield batch

    monkeypatch.setattr(FileSource, "__iter__", failing)  # the forked child runs it too
    path = data_dir / CAPTURES[0]
    for source in (open_source(path, 100), readahead.ReadAhead(open_source(path, 100))):
        got = []
        with pytest.raises(type(error)) as err:
            for batch in source:
                got.append(len(batch))
        assert got == [100, 100, 100] and str(err.value) == str(error)
    assert "in the reader process" in "".join(err.value.__notes__)  # where it happened, for a bug report
    assert readahead.multiprocessing.active_children() == []


def test_stopping_early_ends_the_child(data_dir):
    """What a closed output pipe or an exception in the consumer does: the generator is closed mid-file."""
    batches = iter(readahead.ReadAhead(open_source(data_dir / "attacks/pcaphunt/ps-udp.pcap", 10)))
    next(batches)
    (child,) = readahead.multiprocessing.active_children()
    batches.close()
    assert not child.is_alive() and readahead.multiprocessing.active_children() == []


@pytest.mark.parametrize("fmt", ["kdd", "zeek", "zeek-json", "csv", "jsonl"])
def test_two_and_three_processes_write_the_same_bytes(fmt, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(readahead, "usable_cpus", lambda: 2)  # the children even on a one-CPU runner
    started = []
    real = readahead.ReadAhead
    monkeypatch.setattr(readahead, "ReadAhead", lambda source: started.append(source.path) or real(source))
    writers = []
    real_writer = writebehind.WriteBehind
    monkeypatch.setattr(writebehind, "WriteBehind", lambda *a: writers.append(a[0]) or real_writer(*a))
    inputs = [data_dir / name for name in CAPTURES] + [data_dir / "attacks/slips/port-scans/vertical/conn.log"]
    if fmt not in outputs.RECORD_FORMATS:
        dataset = tmp_path / "kdd.txt"  # dataset rows pass through the writer too
        dataset.write_text("".join((data_dir / "nsl-kdd/KDDTest+.txt").open().readlines()[:300]))
        inputs.append(dataset)
    outs = []
    for workers in (1, 2, 3):
        monkeypatch.setattr(features.tracker, "UidGenerator", lambda seed=None: UidGenerator(7))
        out = tmp_path / f"{workers}.{fmt}"
        cfg = config.from_mapping({"reader": {"workers": workers, "batch_size": 700}})
        args = Namespace(inputs=[str(path) for path in inputs], format=fmt, output=str(out))
        assert features_cmd.run(args, cfg) == 0
        text = out.read_text()
        outs.append([line for line in text.splitlines() if not line.startswith(("#open", "#close"))])
    assert started == [data_dir / name for name in CAPTURES] * 2  # workers 2 and 3 read in a child, every file
    assert writers == [fmt]  # workers 3 wrote in a child
    assert len(outs[0]) > 2000 and outs[0] == outs[1] == outs[2]
    assert readahead.multiprocessing.active_children() == []


def test_a_failing_writer_keeps_the_previous_file(data_dir, tmp_path, monkeypatch):
    """An exception in the writer process is raised by the main process, which then ends both children;
    the output file is only replaced on success."""
    monkeypatch.setattr(readahead, "usable_cpus", lambda: 2)

    def failing(table, fh):
        raise KeyError("bug")

    monkeypatch.setattr(outputs, "write_kdd", failing)  # the forked writer process runs it too
    out = tmp_path / "out.kdd"
    out.write_text("previous\n")
    args = Namespace(inputs=[str(data_dir / CAPTURES[2])], format="kdd", output=str(out))
    with pytest.raises(KeyError) as err:
        features_cmd.run(args, config.from_mapping({"reader": {"workers": 3, "batch_size": 100}}))
    assert "in the writer process" in "".join(err.value.__notes__)
    assert out.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["out.kdd"]
    assert readahead.multiprocessing.active_children() == []


def _warnings(stderr: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timestamp"} for line in stderr.splitlines()]


def test_cli_skips_and_errors_as_in_one_process(data_dir, tmp_path):
    eth_tcp = (data_dir / "attacks/esnet/tcp/control/single_syn.pcap").read_bytes()[40:]
    broken = write_pcap(tmp_path / "broken.pcap", [Rec(eth_tcp), Rec(eth_tcp, wirelen=10), Rec(eth_tcp[:20]),
                                                   Rec(eth_tcp[:40]), Rec(eth_tcp)])
    corrupt = _corrupt_gzip(tmp_path / "corrupt.pcap.gz", _records(data_dir, 100), 0)
    runs = []
    for workers in (1, 2, 3):
        cfg = str(_config(tmp_path, workers, 1))
        ok = subprocess.run([*NETWARDEN, "--config", cfg, str(broken), str(data_dir / CAPTURES[3])], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
        bad = subprocess.run([*NETWARDEN, "--config", cfg, str(corrupt)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        full = subprocess.run([*NETWARDEN, "--config", cfg, "-o", "/dev/full", str(broken)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # the writer fails
        assert ok.returncode == 0 and bad.returncode == 1 and full.returncode == 1
        *warned, error = full.stderr.splitlines()
        runs.append((ok.stdout, _warnings(ok.stderr), bad.stdout, bad.stderr, _warnings("\n".join(warned)), error))
    assert runs[0] == runs[1] == runs[2]
    reasons = [(w["file"], w["reason"]) for w in runs[0][1]]
    assert len(reasons) == len(set(reasons)) >= 4 and (str(broken), "bad_record:orig_len") in reasons  # once each
    assert runs[0][3].startswith("netwarden: error:") and len(runs[0][3].splitlines()) == 1
    assert runs[0][5] == "netwarden: error: cannot write /dev/full: No space left on device"


def test_closed_stdout_ends_every_process(data_dir, tmp_path):
    """``netwarden features ... | head -1``: 800 kB of rows, far more than the pipe holds, so the writer
    process meets the closed pipe; the command stops as in one process and leaves no process behind."""
    codes = []
    for workers in (1, 3):
        proc = subprocess.Popen([*NETWARDEN, "--config", str(_config(tmp_path, workers)),
                                 *(str(data_dir / name) for name in CAPTURES[:3])],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = proc.stdout.readline()
        kids = _children(proc.pid)
        proc.stdout.close()
        codes.append((first, proc.wait(timeout=60), proc.stderr.read()))
        assert all(_gone(kid) for kid in kids)
    assert codes[0] == codes[1] and codes[0][0].count(b",") > 30 and b"Traceback" not in codes[1][2]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _gone(pid: int) -> bool:
    """The process no longer runs (never existed, reaped, or a zombie waiting for its new parent)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to see the reader process")
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "sigkill"])
def test_no_reader_left_behind(how, data_dir, tmp_path):
    """A packet per batch: the reader's messages (3 MB) outgrow the pipe, so it is still running, or
    blocked writing, when the parent is stopped; neither it nor the writer process may stay blocked on a
    pipe nobody reads or writes."""
    cfg = _config(tmp_path, 3, 1)
    capture = write_pcap(tmp_path / "many.pcap", _records(data_dir, 20000))
    proc = subprocess.Popen([*NETWARDEN, "--config", str(cfg), str(capture)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(kids := _children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(kids) == 2, "the reader and writer processes never started"
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal sends it to the whole foreground group
        else:
            proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        proc.wait(timeout=60)
        assert all(_gone(kid) for kid in kids)
        if how == "ctrl-c":
            assert proc.returncode == 130 and b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
