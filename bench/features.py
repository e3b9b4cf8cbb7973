"""Benchmark of ``netwarden features`` end to end (read, decode, track, windows, vectors, write).

usage: .venv/bin/python bench/features.py [--skip-reference] [--profile] [--repeat N]

Prints, in one run:
- packets/s of the whole process ``netwarden features --format kdd -o /dev/null`` on the 10x benchmark
  capture (bench/out/ndpi-ether-10x.pcap, built with ../shared/tools/make_bench_pcap.py if missing), and its
  peak RSS measured from outside, for each ``reader.workers`` (3: a reader child decodes, the main process
  tracks, a writer child computes windows and vectors and writes; 2: the main process also computes and
  writes; 1: everything in one process);
- packets/s of the per-packet reference loop of bench/decode.py (``reference``) on the same file, and the ratio (target
  >= 1.0x, RSS < 500 MB);
- connections/s on the spoofed SYN flood capture (attacks/stopddos/pkt.TCP.synflood.spoofed.pcap);
- with ``--profile``: where the time goes, per stage (read+decode, or the wait for the reader process, track,
  kdd text), streaming batch by batch as the command does.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = Path(os.environ.get("NETWARDEN_DATA", ROOT.parent / "shared" / "data")).resolve()
BENCH_PCAP = HERE / "out" / "ndpi-ether-10x.pcap"
SYNFLOOD = DATA / "attacks" / "stopddos" / "pkt.TCP.synflood.spoofed.pcap"
MAKE_BENCH = DATA.parent / "tools" / "make_bench_pcap.py"


def ensure_bench_pcap() -> Path:
    if not BENCH_PCAP.exists():
        BENCH_PCAP.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(MAKE_BENCH), str(BENCH_PCAP), "10"], check=True)
    return BENCH_PCAP


def count_pcap_records(path: Path) -> int:
    """Records in a little-endian classic pcap (the benchmark files), by walking the record headers.

    A block at a time: this process must stay small, because Linux hands a parent's peak RSS on to the
    ``ru_maxrss`` of the children it forks (a 350 MB ``read()`` or mapping here would show as theirs)."""
    n, base, off, buf = 0, 24, 0, b""
    with open(path, "rb") as fh:
        while True:
            if off + 16 > len(buf):
                base += off
                fh.seek(base)
                buf, off = fh.read(1 << 22), 0
                if len(buf) < 16:
                    return n
            off += 16 + struct.unpack_from("<I", buf, off + 8)[0]
            n += 1


def _tree_rss_mb(pid: int) -> float:
    """Resident MB of a process and its children now (0 once it is gone)."""
    total, pids = 0, [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            pids += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def run_features(path: Path, out: str, workers: int | None = None) -> tuple[float, float, float]:
    """Wall seconds and peak RSS (MB) of ``netwarden features --format kdd -o OUT PATH`` as its own process,
    with ``reader.workers`` (None: the default). Two RSS figures: ``ru_maxrss`` over this script's children
    so far (exact, but the largest single process: the 10x capture runs first, while this process is still
    small, see ``count_pcap_records``), and the sum over the command and its reader process, sampled from
    /proc every 20 ms (what the machine must hold)."""
    cmd = [sys.executable, "-c", "import sys; from sensor.cli import main; sys.exit(main())", "features"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as cfg:
        if workers is not None:
            cfg.write(f"reader:\n  workers: {workers}\n")
            cfg.flush()
            cmd += ["--config", cfg.name]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd + ["--format", "kdd", "-o", out, str(path)], cwd=ROOT)
        tree = 0.0
        while proc.poll() is None:
            tree = max(tree, _tree_rss_mb(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"netwarden features failed (exit {proc.returncode})")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, tree


def reference_rate(path: Path, packets: int) -> float | None:
    sys.path.insert(0, str(HERE))
    try:
        import decode  # bench/decode.py: the decode benchmark and its per-packet reference loop
    except ImportError as exc:
        print(f"reference loop unavailable: {exc}")
        return None
    loop = getattr(decode, "reference_loop", None) or decode.reference
    start = time.perf_counter()
    loop(str(path))
    return packets / (time.perf_counter() - start)


def profile(path: Path, workers: int) -> None:
    """Split of the main process's time by stage, streaming as ``netwarden features`` does; with 2 or 3
    workers the first stage is the time this process waits for the reader process (the rest of reading
    overlaps), with 3 the windows, vectors and text are the writer process's and this process only hands
    it the records ("to writer": encoding and the pipe, including any wait for a full pipe).
    Also this process's CPU seconds: the wall time the command would take with its other processes on a
    free CPU (wall times on a shared machine also count the time the processes wait for a CPU)."""
    sys.path.insert(0, str(ROOT))
    from features.tracker import ConnectionTracker, TrackerSettings
    from features.vectors import FeatureBuilder
    from sensor import config, outputs
    from sensor.pipeline import WINDOW_GROUP, tracker_horizon
    from sensor.readahead import ReadAhead
    from sensor.sources import open_source
    from sensor.writebehind import WriteBehind

    cfg = config.defaults()
    settings = TrackerSettings.from_config(cfg.section("tracker"))
    tracker, horizon = ConnectionTracker(settings), tracker_horizon(settings)
    builder = FeatureBuilder.from_config(cfg, WINDOW_GROUP)
    first = "read+decode" if workers == 1 else "wait for reader"
    later = ("to writer",) if workers == 3 else ("windows+vectors", "kdd text")
    spent = dict.fromkeys((first, "track") + later, 0.0)
    conns, wall, cpu = 0, time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as sink, contextlib.ExitStack() as stack:
        if workers == 3:
            behind = stack.enter_context(WriteBehind("kdd", sink, cfg))
            behind.begin(str(path))
        writer = outputs.Writer("kdd", sink)
        source = open_source(path, cfg["reader.batch_size"])
        batches = iter(source if workers == 1 else ReadAhead(source))
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            t1 = time.perf_counter()
            spent[first] += t1 - t0
            last = batch is None
            records = tracker.flush() if last else tracker.process(batch)
            t2 = time.perf_counter()
            spent["track"] += t2 - t1
            watermark = math.inf if last else int(batch["ts_ns"].max()) / 1e9 - horizon
            conns += len(records)
            if workers == 3:
                behind.records(records, watermark)
                if last:
                    behind.close()
                spent["to writer"] += time.perf_counter() - t2
            else:
                table = builder.feed(records, watermark)
                t3 = time.perf_counter()
                writer.write(table, None)
                spent["windows+vectors"] += t3 - t2
                spent["kdd text"] += time.perf_counter() - t3
            if last:
                break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"profile (streaming, reader.workers {workers}): {conns:,} connections in {wall:.2f} s, main process "
          f"{cpu:.2f} CPU s; " + ", ".join(f"{k} {v:.2f} s ({v / max(conns, 1) * 1e6:.1f} us/connection)"
                                          for k, v in spent.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-reference", action="store_true", help="do not run the reference loop")
    parser.add_argument("--profile", action="store_true", help="also split the time by stage, for each reader.workers")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the command and the reference loop N times each, keep the best (shared machines)")
    args = parser.parse_args()

    pcap = ensure_bench_pcap()
    packets = count_pcap_records(pcap)
    # every run of the command before the reference loop: that loop grows this process, and Linux passes a
    # parent's peak RSS on to the children it forks afterwards
    sys.path.insert(0, str(ROOT))  # ahead of bench/, whose features.py would hide the features package
    from sensor import config

    default = config.defaults()["reader.workers"]
    rates = {}
    for workers in (2, 3, 1):  # every mode of reader.workers, the default first
        runs = [run_features(pcap, os.devnull, workers) for _ in range(max(1, args.repeat))]
        wall = min(w for w, _, _ in runs)
        rates[workers] = packets / wall
        print(f"netwarden features --format kdd, reader.workers {workers}{' (default)' if workers == default else ''}: "
              f"{packets:,} packets in {wall:.2f} s = {rates[workers]:,.0f} packets/s, peak RSS "
              f"{max(t for _, _, t in runs):.0f} MB summed over its processes, largest process "
              f"{runs[-1][1]:.0f} MB (target < 500 MB)")
    if not args.skip_reference:
        refs = [reference_rate(pcap, packets) for _ in range(max(1, args.repeat))]
        ref = max(refs) if all(refs) else None
        if ref:
            print(f"reference per-packet loop: {ref:,.0f} packets/s; features / reference = "
                  + ", ".join(f"{rate / ref:.2f}x with {w} worker{'s' if w > 1 else ''}" for w, rate in rates.items())
                  + " (target >= 1.0x)")

    with tempfile.NamedTemporaryFile("r", suffix=".kdd") as out:
        wall, _, _ = run_features(SYNFLOOD, out.name)
        conns = sum(1 for _ in open(out.name))
    print(f"SYN flood ({SYNFLOOD.name}): {conns:,} connections in {wall:.2f} s = {conns / wall:,.0f} "
          f"connections/s (whole process)")
    if args.profile:
        for workers in rates:
            profile(pcap, workers)


if __name__ == "__main__":
    main()
