"""Connection records -> feature vectors: the 9 basic KDD features plus the 19 traffic-window features.

``FeatureBuilder`` keeps the traffic windows between calls, so the daemon hands it each group of records
the tracker emits and a file is one stream. Within a call the records are fed to the windows in end-time
order (the order the windows are defined in), and the rows come back in the records' own order, next to
their ids, so a row can always be traced to its connection.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from features.records import ConnectionRecord
from features.schema import FEATURE_DTYPE, encode_categories
from features.services import record_service
from features.table import FeatureTable
from features.windows import TRAFFIC_FEATURES, TrafficWindows, error_class

def end_time(rec: ConnectionRecord) -> float:
    """When the connection ended: ``end_ts`` where the tracker set it, else ``ts + duration`` (conn.log)."""
    return max(rec.end_ts, rec.ts + rec.duration)


class FeatureBuilder:
    """Turns records into FEATURE_DTYPE rows; window state persists across ``add`` calls."""

    def __init__(self, time_window: float = 2.0, host_window: int = 100, max_entries: int = 1_000_000,
                 label_column: str | None = "label") -> None:
        self.windows = TrafficWindows(time_window, host_window, max_entries)
        self.label_column = label_column

    @classmethod
    def from_config(cls, cfg) -> "FeatureBuilder":
        """Built from ``cfg.section("windows")`` and ``model.label_column``."""
        w = cfg.section("windows")
        return cls(w["time_window"], w["host_window"], w["max_entries"], cfg["model.label_column"])

    def add(self, records: Sequence[ConnectionRecord], source: str = "") -> FeatureTable:
        """Feature rows for ``records`` (in their order), with ids and, if every record has one, labels."""
        n = len(records)
        out = np.zeros(n, FEATURE_DTYPE)
        if n:
            services = [record_service(r) for r in records]
            self._basic(records, services, out)
            self._traffic(records, services, out)
        ids = [{"uid": r.uid, "orig_h": r.orig_h, "orig_p": r.orig_p, "resp_h": r.resp_h, "resp_p": r.resp_p,
                "proto": r.proto, "ts": r.ts} for r in records]
        return FeatureTable(out, ids, self._labels(records), None, source)

    @staticmethod
    def _basic(records: Sequence[ConnectionRecord], services: list[str], out: np.ndarray) -> None:
        out["duration"] = [r.duration for r in records]
        out["protocol_type"] = encode_categories("protocol_type", (r.proto for r in records))
        out["service"] = encode_categories("service", services)
        out["flag"] = encode_categories("flag", (r.conn_state for r in records))
        out["src_bytes"] = [r.orig_bytes for r in records]
        out["dst_bytes"] = [r.resp_bytes for r in records]
        out["land"] = [r.land for r in records]
        out["wrong_fragment"] = [r.wrong_fragment for r in records]
        out["urgent"] = [r.urgent for r in records]

    def _traffic(self, records: Sequence[ConnectionRecord], services: list[str], out: np.ndarray) -> None:
        ends = [end_time(r) for r in records]
        order = np.argsort(np.array(ends, dtype=np.float64), kind="stable")
        push = self.windows.push
        flat = array("d")  # 8 bytes a value: a list of tuples would cost ~80
        for i in order.tolist():
            r = records[i]
            flat.extend(push(ends[i], r.resp_h, (r.proto, services[i]), r.orig_p,
                             error_class(r.proto, r.conn_state)))
        values = np.frombuffer(flat, dtype=np.float64).reshape(len(records), len(TRAFFIC_FEATURES))
        for j, name in enumerate(TRAFFIC_FEATURES):
            out[name][order] = values[:, j]

    def _labels(self, records: Sequence[ConnectionRecord]) -> np.ndarray | None:
        col = self.label_column
        if not records or not col or not all(col in r.extra for r in records):
            return None
        return np.array([r.extra[col] for r in records], dtype=object)


def feature_table(records: Sequence[ConnectionRecord], time_window: float = 2.0, host_window: int = 100,
                  label_column: str | None = "label", source: str = "") -> FeatureTable:
    """One-shot: the FeatureTable of a complete list of records (fresh windows)."""
    return FeatureBuilder(time_window, host_window, label_column=label_column).add(records, source)
