"""Regenerate the golden feature files: ``.venv/bin/python tests/golden/regenerate.py``.

Each golden file holds the feature rows ``netwarden features`` computes for one small real input (default
config), one JSON object per connection: the connection ids (without the random uid), the 28 features with
categoricals as names, and the label where the input has one. ``tests/test_golden_features.py`` compares
fresh output with them. Regenerate only after an intended change of tracking or feature semantics, and
review the diff: every changed number should be explained by that change.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from features.schema import CATEGORICAL_VOCABULARIES, decode_category  # noqa: E402
from sensor import config  # noqa: E402
from sensor.pipeline import load_input  # noqa: E402

DATA = Path(os.environ.get("NETWARDEN_DATA", ROOT.parent / "shared" / "data")).resolve()

# golden file name -> input, relative to the data set
INPUTS: dict[str, str] = {
    "zeek-wikipedia": "zeek/traces/wikipedia.pcap",
    "zeek-pop3": "zeek/traces/pop3/pop3.pcap",
    "esnet-nmap-80-service-detection": "attacks/esnet/attacks/scanners/nmap/nmap_80_w_service_detection.pcap",
    "slips-icmp-portscan": "attacks/slips/test12-icmp-portscan.pcap",
    "pcaphunt-ftp-credentials": "attacks/pcaphunt/cs-ftpServerCredentials.pcap",
    "slips-vertical-scan-conn-log": "attacks/slips/port-scans/vertical/conn.log",
}


def golden_rows(name: str) -> list[dict]:
    """The rows for one golden input, computed now."""
    table = load_input(DATA / INPUTS[name], config.defaults()).table
    rows = []
    for k, feats in enumerate(table.features):
        row = {key: value for key, value in table.ids[k].items() if key != "uid"}
        for field in table.features.dtype.names:
            value = feats[field].item()
            row[field] = decode_category(field, value) if field in CATEGORICAL_VOCABULARIES else value
        if table.labels is not None:
            row["label"] = str(table.labels[k])
        rows.append(row)
    return rows


def main() -> None:
    for name in INPUTS:
        path = HERE / f"{name}.jsonl"
        rows = golden_rows(name)
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        print(f"{path.relative_to(ROOT)}: {len(rows)} rows")


if __name__ == "__main__":
    main()
