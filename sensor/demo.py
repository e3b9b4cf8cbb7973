"""``make demo``: the whole job on built-in traffic, on a fresh machine, without the shared data set.

1. builds two captures with scapy (``sensor.demo_traffic``): a baseline of ordinary traffic and a mixed
   capture with a port scan, a spoofed SYN flood and a UDP sweep laid over the same kind of traffic;
2. ``netwarden train`` on the baseline capture (packets -> connections -> KDD features -> autoencoder);
3. ``netwarden score`` on the mixed capture with the numpy scorer;
4. prints the alerts (normalized score >= 1) as Suricata-EVE-style JSON lines, with the features behind
   each score, and a summary of what was caught.

Everything goes through the public CLI, exactly as an operator would run it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from sensor.cli import main as netwarden
from sensor.demo_traffic import ATTACKER, VICTIM, write_demo_captures

# Small and quick: the demo must finish in well under a minute after the install.
DEMO_CONFIG = """\
logging: {level: warning}
model: {epochs: 30, ensemble: 1, target_fpr: 0.01}
"""


def _attack_kind(row: dict) -> str:
    """What the demo traffic generator put into this connection (for the summary only)."""
    if row.get("orig_h") == ATTACKER and row.get("proto") == "tcp":
        return "port scan"
    if row.get("orig_h") == ATTACKER:
        return "udp sweep"
    if row.get("resp_h") == VICTIM and str(row.get("orig_h", "")).startswith("203.0."):
        return "syn flood"
    return "normal"


def _eve_alert(row: dict) -> dict:
    return {
        "timestamp": row.get("ts"),
        "event_type": "alert",
        "uid": row.get("uid"),
        "src_ip": row.get("orig_h"),
        "src_port": row.get("orig_p"),
        "dest_ip": row.get("resp_h"),
        "dest_port": row.get("resp_p"),
        "proto": str(row.get("proto", "")).upper(),
        "alert": {
            "signature": "netwarden anomalous connection",
            "severity": 1 if row["normalized_score"] >= 3 else 2,
            "score": round(row["score"], 4),
            "normalized_score": round(row["normalized_score"], 3),
            "top_features": row["top_features"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sensor.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo-out", help="where captures, model and scores go")
    parser.add_argument("--show", type=int, default=5, help="alerts printed per attack kind")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    print(f"[1/4] building demo captures in {work}/ ...", flush=True)
    baseline, mixed = write_demo_captures(work)
    config = work / "demo.yaml"
    config.write_text(DEMO_CONFIG)
    print("[2/4] netwarden train baseline.pcap ...", flush=True)
    if netwarden(["train", str(baseline), "-o", str(work / "model"), "--config", str(config)]) != 0:
        return 1
    print("[3/4] netwarden score mixed.pcap ...", flush=True)
    scores = work / "scores.jsonl"
    if netwarden(["score", str(mixed), "--model", str(work / "model"), "-o", str(scores),
                  "--config", str(config)]) != 0:
        return 1
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    alerts = [r for r in rows if r["normalized_score"] >= 1.0]
    print(f"[4/4] {len(alerts)} alerts out of {len(rows)} connections (EVE-style JSON):", flush=True)
    shown: Counter[str] = Counter()
    for row in sorted(alerts, key=lambda r: -r["normalized_score"]):
        kind = _attack_kind(row)
        if shown[kind] < args.show:
            shown[kind] += 1
            print(json.dumps(_eve_alert(row)))
    total = Counter(_attack_kind(r) for r in rows)
    caught = Counter(_attack_kind(r) for r in alerts)
    print("\nsummary (connections alerted / connections of that kind):")
    for kind in sorted(total):
        print(f"  {kind:10s} {caught[kind]:6d} / {total[kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
