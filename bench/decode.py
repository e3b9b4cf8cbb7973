"""Decode throughput: netwarden's vectorized FileSource vs a per-packet scapy RawPcapReader + struct loop.

usage: .venv/bin/python bench/decode.py [--quick] [--repeat N] [--input FILE]

Input: ``../shared/data/bench/ndpi-ether.pcap`` repeated 10x (built once into bench/out/ with
``../shared/tools/make_bench_pcap.py``); ``--quick`` uses the 1x file. Each measurement runs in its own
subprocess so ``ru_maxrss`` is that decoder's peak RSS alone; with ``--repeat`` the best time is kept. Also
times ``netwarden stats`` on the same file, which should run at about our decode speed (it is how the speed
is checked from outside). Prints figures; asserts nothing (numbers depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
TOOLS = ROOT.parent / "shared" / "tools"
OUT = ROOT / "bench" / "out"
TARGET_RATIO = 2.5


def reference(path: str) -> int:
    """The baseline users compare against: one Python iteration and struct calls per packet."""
    from scapy.utils import RawPcapReader

    eth = struct.Struct("!6s6sH")
    ip4 = struct.Struct("!BBHHHBBH4s4s")
    ip6 = struct.Struct("!IHBB16s16s")
    tcp = struct.Struct("!HHIIBBHHH")
    udp = struct.Struct("!HHHH")
    rows, records = [], 0
    for data, _meta in RawPcapReader(path):
        records += 1
        if len(data) < 14:
            continue
        _, _, etype = eth.unpack_from(data, 0)
        off = 14
        while etype == 0x8100 and len(data) >= off + 4:
            etype = struct.unpack_from("!H", data, off + 2)[0]
            off += 4
        if etype == 0x0800 and len(data) >= off + 20:
            vihl, _, ip_len, ident, frag, ttl, proto, _, src, dst = ip4.unpack_from(data, off)
            off += (vihl & 0x0F) * 4
        elif etype == 0x86DD and len(data) >= off + 40:
            _, plen, proto, ttl, src, dst = ip6.unpack_from(data, off)
            ip_len, ident, frag = plen + 40, 0, 0
            off += 40
        else:
            continue
        sport = dport = seq = ack = flags = 0
        if proto == 6 and len(data) >= off + 20:
            sport, dport, seq, ack, doff, flags, _, _, _ = tcp.unpack_from(data, off)
        elif proto == 17 and len(data) >= off + 8:
            sport, dport, _, _ = udp.unpack_from(data, off)
        rows.append((src, dst, proto, sport, dport, seq, ack, flags, ip_len, ttl, ident, frag))
    return records  # records read, as for ours (rows holds the decoded IP packets)


def ours(path: str) -> int:
    from sensor.sources import FileSource

    return sum(len(batch) for batch in FileSource(path))


def measure(kind: str, path: str) -> None:
    """Child process: run one decoder, print JSON with packets, seconds and peak RSS."""
    import structlog

    import scapy.utils  # noqa: F401  (imports are start-up cost, not decode speed: done before the clock)

    import sensor.sources  # noqa: F401

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # skip warnings are not measured
    start = time.perf_counter()
    n = {"ours": ours, "reference": reference}[kind](path)
    secs = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"packets": n, "seconds": secs, "rss_mb": rss_mb}))


def child(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_stats_cli(path: Path) -> float:
    netwarden = Path(sys.executable).parent / "netwarden"
    start = time.perf_counter()
    subprocess.run([str(netwarden), "stats", str(path), "-o", str(OUT / "stats.json")], check=True,
                   capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def bench_input(quick: bool, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if quick:
        return DATA / "bench" / "ndpi-ether.pcap"
    path = OUT / "ndpi-ether-10x.pcap"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(TOOLS / "make_bench_pcap.py"), str(path), "10"], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1x file (99k packets) instead of 10x")
    parser.add_argument("--repeat", type=int, default=1, help="runs per decoder; the best is reported")
    parser.add_argument("--input", help="another classic pcap to decode")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(*args.child)
        return
    path = bench_input(args.quick, args.input)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"input: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    results = {}
    for kind in ("ours", "reference"):
        runs = [child(kind, path) for _ in range(max(1, args.repeat))]
        best = min(runs, key=lambda r: r["seconds"])
        results[kind] = best
        print(f"{kind:>9}: {best['packets']:>9} packets in {best['seconds']:7.2f} s = "
              f"{best['packets'] / best['seconds']:>10,.0f} pkts/s, peak RSS {best['rss_mb']:.0f} MB")
    ratio = (results["ours"]["packets"] / results["ours"]["seconds"]) / (
        results["reference"]["packets"] / results["reference"]["seconds"])
    print(f"    ratio: {ratio:.1f}x the reference (target >= {TARGET_RATIO}x)")
    stats_s = min(time_stats_cli(path) for _ in range(max(1, args.repeat)))
    print(f"netwarden stats: {stats_s:.2f} s wall incl. start-up = "
          f"{results['ours']['packets'] / stats_s:,.0f} pkts/s")


if __name__ == "__main__":
    main()
