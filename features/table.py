"""FeatureTable: feature vectors plus what identifies and labels each row.

Every producer of feature vectors returns one: the pcap path (packets -> connections -> windows), the
Zeek conn.log reader and the NSL-KDD / KDD'99 loaders. Models train on ``features`` and report results by
``ids``; ``labels`` is present only for labelled inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.schema import FEATURE_DTYPE


@dataclass
class FeatureTable:
    features: np.ndarray  # FEATURE_DTYPE, one row per connection, in input order
    ids: list[dict[str, object]] = field(default_factory=list)  # per row: uid, orig_h, orig_p, resp_h, resp_p, proto, ts
    labels: np.ndarray | None = None  # per row label text (e.g. "normal", "neptune", "Benign"), or None
    categories: np.ndarray | None = None  # per row attack category ("normal", "dos", "probe", ...), or None
    source: str = ""  # what the rows were read from, for reports

    def __post_init__(self) -> None:
        if self.features.dtype != FEATURE_DTYPE:
            raise TypeError("FeatureTable.features must have FEATURE_DTYPE")
        n = len(self.features)
        for name in ("labels", "categories"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"FeatureTable.{name} has {len(col)} rows, features has {n}")
        if self.ids and len(self.ids) != n:
            raise ValueError(f"FeatureTable.ids has {len(self.ids)} rows, features has {n}")

    def __len__(self) -> int:
        return len(self.features)

    @staticmethod
    def concat(tables: list["FeatureTable"]) -> "FeatureTable":
        """Rows of several tables in order; labels only if every table has them."""
        feats = np.concatenate([t.features for t in tables]) if tables else np.zeros(0, FEATURE_DTYPE)
        ids = [i for t in tables for i in t.ids] if all(t.ids for t in tables) else []
        labels = (np.concatenate([t.labels for t in tables])
                  if tables and all(t.labels is not None for t in tables) else None)
        cats = (np.concatenate([t.categories for t in tables])
                if tables and all(t.categories is not None for t in tables) else None)
        return FeatureTable(feats, ids, labels, cats, ", ".join(t.source for t in tables))
