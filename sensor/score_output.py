"""Writing scores: one row per input record, in input order, as CSV or JSON lines.

Columns: the record's ids (uid, addresses, ports ... or file and line for dataset rows), ``score``,
``normalized_score`` (score / threshold, >= 1 is an alert), ``top_features`` (``name:share`` of the score,
largest first) and ``label`` where the input was labelled.
"""

from __future__ import annotations

import csv
import json
from typing import IO

from features.table import FeatureTable
from models.explain import format_top
from models.scorer import Scores

JSON_EXTENSIONS = (".jsonl", ".json", ".ndjson")


def format_for(target: str) -> str:
    return "jsonl" if target.lower().endswith(JSON_EXTENSIONS) else "csv"


def write(fh: IO[str], fmt: str, table: FeatureTable, scores: Scores, tops: list[list[tuple[str, float]]]) -> None:
    id_names = list(table.ids[0]) if table.ids else []
    labels = table.labels
    if fmt == "jsonl":
        for i in range(len(table)):
            row = {k: table.ids[i].get(k) for k in id_names}
            row.update(score=float(scores.score[i]), normalized_score=float(scores.normalized[i]),
                       top_features=[{"feature": n, "share": round(s, 4)} for n, s in tops[i]])
            if labels is not None:
                row["label"] = str(labels[i])
            fh.write(json.dumps(row) + "\n")
        return
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(id_names + ["score", "normalized_score", "top_features"] + (["label"] if labels is not None else []))
    for i in range(len(table)):
        row = [table.ids[i].get(k, "") for k in id_names]
        row += [f"{scores.score[i]:.6g}", f"{scores.normalized[i]:.6g}", format_top(tops[i])]
        if labels is not None:
            row.append(str(labels[i]))
        writer.writerow(row)
