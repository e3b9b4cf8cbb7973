"""Connection tracker throughput: packets/s on the 10x benchmark pcap, connections/s on a spoofed SYN flood,
peak RSS per million concurrent connections. Prints figures; run as ``.venv/bin/python bench/tracker.py``.

Figures are wall-clock on a shared machine: compare runs made back to back. The library leaves the garbage
collector alone; the 1M-connection figure therefore includes Python's GC passes over the tracked objects.

Build the 10x file first: ``python ../shared/tools/make_bench_pcap.py bench/out/ndpi-ether-10x.pcap 10``
(falls back to the 1x ``bench/ndpi-ether.pcap`` of the shared data when it is missing).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("NETWARDEN_DATA", ROOT.parent / "shared" / "data"))

from features.tracker import ConnectionTracker, TrackerSettings  # noqa: E402
from sensor.packets import TCP_SYN, empty_batch  # noqa: E402
from sensor.sources import open_source  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _track_all(batches: list[np.ndarray]) -> tuple[ConnectionTracker, int, float]:
    """Track pre-decoded batches to the end: (tracker, records emitted, seconds)."""
    tracker = ConnectionTracker(uid_seed=0)
    start = time.perf_counter()
    records = sum(len(tracker.process(b)) for b in batches) + len(tracker.flush())
    return tracker, records, time.perf_counter() - start


def bench_file(path: Path) -> None:
    batches = list(open_source(path))  # decode outside the timed part: this measures tracking only
    packets = sum(len(b) for b in batches)
    _, records, secs = _track_all(batches)
    print(f"{path.name}: {packets:,} packets, {records:,} records, {secs:.2f} s tracking = "
          f"{packets / secs:,.0f} packets/s, {records / secs:,.0f} records/s")


def bench_synflood() -> None:
    path = DATA / "attacks" / "stopddos" / "pkt.TCP.synflood.spoofed.pcap"
    if not path.exists():
        print(f"skipped SYN flood: {path} missing")
        return
    batches = list(open_source(path))
    tracker, records, secs = _track_all(batches)
    print(f"SYN flood: {sum(map(len, batches)):,} packets, {records:,} connections in {secs:.2f} s = "
          f"{records / secs:,.0f} connections/s; evicted {tracker.counters['evicted_attempts']:,}")


def bench_million() -> None:
    n = 1_000_000
    b = empty_batch(n)
    rng = np.random.default_rng(0)
    b["ts_ns"] = np.arange(n, dtype=np.int64) * 1000
    b["ip_version"], b["proto"], b["tcp_flags"], b["ip_len"] = 4, 6, TCP_SYN, 40
    b["src_lo"] = (np.uint64(0xFFFF) << np.uint64(32)) | rng.integers(0, 2**32, n, dtype=np.uint64)
    b["dst_lo"] = (np.uint64(0xFFFF) << np.uint64(32)) | np.uint64(0x0A000002)
    b["sport"] = rng.integers(1024, 65535, n)
    b["dport"] = 80
    before = rss_mb()
    tracker = ConnectionTracker(TrackerSettings(max_connections=2_000_000), uid_seed=0)
    start = time.perf_counter()
    for i in range(0, n, 65536):
        tracker.process(b[i:i + 65536])
    secs = time.perf_counter() - start
    grown = rss_mb() - before
    print(f"1M distinct SYNs: {len(tracker):,} concurrent connections, {n / secs:,.0f} packets/s, "
          f"peak RSS {rss_mb():,.0f} MB (+{grown:,.0f} MB over the batch itself = "
          f"{grown * 2**20 / len(tracker):,.0f} bytes per connection)")


if __name__ == "__main__":
    ten_x = ROOT / "bench" / "out" / "ndpi-ether-10x.pcap"
    bench_file(ten_x if ten_x.exists() else DATA / "bench" / "ndpi-ether.pcap")
    bench_synflood()
    bench_million()
