"""Run Zeek's regression traces through our tracker and diff the records against Zeek's conn.log baselines.

Shared by tests/test_tracker_zeek.py (the assertion) and usable by hand to inspect differences:
``.venv/bin/python -m tests.zeek_baselines`` prints every current difference in the fixture's format.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from features.records import ConnectionRecord
from features.tracker import ConnectionTracker
from sensor.sources import open_source

COMPARED = ("proto", "conn_state", "history", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes",
            "orig_bytes", "resp_bytes", "duration")
SKIPPED = ("netcontrol.packetfilter",)  # Zeek filtered that capture with a script-installed packet filter
DURATION_TOLERANCE = 2e-6  # Zeek prints 6 decimals
UNSET_WHEN_INSTANT = ("orig_bytes", "resp_bytes")


# Why each baseline still differs (the fixture's reason column is written from this when regenerating).
REASONS = {
    "baselines/core.tunnels.gtp.outer_ip_frag/conn.log":
        "4 incomplete outer fragmented datagrams: Zeek drops them, we count their first fragment and the GTP "
        "packet inside; no TCP reassembly: content-gap letter g not produced",
    "baselines/core.expire-all-timers/conn-limited.log":
        "the test throttles Zeek's timers, so Zeek misses the 300 s inactivity expiry we apply",
    "baselines/core.tcp.rxmit-history/conn-1.log": "no TCP reassembly: content-gap letters G/g not produced",
}


def full_baselines(zeek_dir: Path) -> list[tuple[str, list[str]]]:
    """(baseline path, trace paths) of every full conn.log baseline in MAPPING.tsv."""
    out = []
    for line in (zeek_dir / "MAPPING.tsv").read_text().splitlines()[1:]:
        cols = line.split("\t")
        if cols[4] == "full" and not any(s in cols[0] for s in SKIPPED):
            out.append((cols[0], cols[1].split(";")))
    return out


def read_conn_log(path: Path) -> list[dict[str, str]]:
    rows, names = [], []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(names, line.split("\t"))))
    return rows


def track(paths: list[Path]) -> list[ConnectionRecord]:
    tracker = ConnectionTracker(uid_seed=0)
    records: list[ConnectionRecord] = []
    for path in paths:
        for batch in open_source(path):
            records += tracker.process(batch)
    return records + tracker.flush()


def _tuple(proto, oh, op, rh, rp) -> str:
    return f"{proto} {oh}:{op}>{rh}:{rp}"


def _ours(rec: ConnectionRecord, field: str) -> str:
    value = getattr(rec, field)
    return f"{value:.6f}" if field == "duration" else str(value)


def _zeek(row: dict[str, str], field: str) -> str:
    value = row[field]
    if value == "-" and field != "history":
        value = "0.000000" if field == "duration" else "0"
    return value


def differences(zeek_dir: Path) -> tuple[int, int, set[tuple[str, str, str, str, str]]]:
    """(Zeek connections, connections agreeing on every field, {(baseline, tuple#n, field, ours, zeek)})."""
    total = agree = 0
    diffs: set[tuple[str, str, str, str, str]] = set()
    for baseline, traces in full_baselines(zeek_dir):
        zeek_rows = read_conn_log(zeek_dir / baseline)
        ours = sorted(track([zeek_dir / t for t in traces]), key=lambda r: r.ts)
        by_tuple: dict[str, list] = defaultdict(list)
        for rec in ours:
            by_tuple[_tuple(rec.proto, rec.orig_h, rec.orig_p, rec.resp_h, rec.resp_p)].append(rec)
        zeek_by_tuple: dict[str, list] = defaultdict(list)
        for row in zeek_rows:
            zeek_by_tuple[_tuple(row["proto"], row["id.orig_h"], row["id.orig_p"], row["id.resp_h"],
                                 row["id.resp_p"])].append(row)
        for key in sorted(set(by_tuple) | set(zeek_by_tuple)):
            zs, os_ = zeek_by_tuple.get(key, []), by_tuple.get(key, [])
            if "XXXX" not in "".join(z["ts"] for z in zs):
                zs = sorted(zs, key=lambda z: float(z["ts"]))
            for n in range(max(len(zs), len(os_))):
                ident = f"{key}#{n}"
                if n >= len(zs):
                    diffs.add((baseline, ident, "record", "present", "absent"))
                    continue
                total += 1
                if n >= len(os_):
                    diffs.add((baseline, ident, "record", "absent", "present"))
                    continue
                row_diffs = _compare(os_[n], zs[n])
                agree += not row_diffs
                diffs.update((baseline, ident, f, o, z) for f, o, z in row_diffs)
    return total, agree, diffs


def _compare(rec: ConnectionRecord, row: dict[str, str]) -> list[tuple[str, str, str]]:
    out = []
    for field in COMPARED:
        if field in UNSET_WHEN_INSTANT and row[field] == "-":
            continue  # Zeek leaves bytes unset for zero-duration connections; we keep the payload count
        ours, zeek = _ours(rec, field), _zeek(row, field)
        if field == "duration":
            if abs(float(ours) - float(zeek)) > DURATION_TOLERANCE:
                out.append((field, ours, zeek))
        elif ours != zeek:
            out.append((field, ours, zeek))
    return out


if __name__ == "__main__":
    import os

    data = Path(os.environ.get("NETWARDEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    total, agree, diffs = differences(data / "zeek")
    for d in sorted(diffs):
        print("\t".join((*d, REASONS.get(d[0], ""))))
    print(f"# {agree}/{total} connections agree on every field ({agree / total:.1%})")
