"""Connection records -> feature vectors: the 9 basic KDD features plus the 19 traffic-window features.

``FeatureBuilder`` keeps the traffic windows between calls, so the daemon hands it each group of records
the tracker emits and a file is one stream. Records are fed to the windows in end-time order (the order the
windows are defined in), and the rows come back in the records' own order (the order they were handed in,
i.e. the tracker's emission order), next to their ids, so a row can always be traced to its connection.

Streaming (``feed``): the tracker emits a connection only after it ended, so records arrive roughly, not
exactly, in end order. ``feed(records, watermark)`` holds them back until the caller promises that no
record ending before ``watermark`` will come any more (for a capture: latest packet time minus the longest
tracker timeout), then feeds the held records that ended before it in end order and returns the rows that
are complete, in emission order. The rows are therefore exactly those of one ``add`` over the whole input,
while memory holds only the records of the last timeout's worth of traffic.
"""

from __future__ import annotations

import math
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
        # records handed to ``feed`` whose rows are not returned yet, with their rows, end times, services
        self._held: list[ConnectionRecord] = []
        self._held_feats = np.zeros(0, FEATURE_DTYPE)
        self._held_ends = np.zeros(0)
        self._held_srv: list[str] = []
        self._held_done = np.zeros(0, bool)

    @classmethod
    def from_config(cls, cfg) -> "FeatureBuilder":
        """Built from ``cfg.section("windows")`` and ``model.label_column``."""
        w = cfg.section("windows")
        return cls(w["time_window"], w["host_window"], w["max_entries"], cfg["model.label_column"])

    def add(self, records: Sequence[ConnectionRecord], source: str = "") -> FeatureTable:
        """Feature rows for ``records`` (in their order, after any still held by ``feed``), with ids and, if
        every record has one, labels."""
        return self.feed(records, math.inf, source)

    def feed(self, records: Sequence[ConnectionRecord], watermark: float, source: str = "") -> FeatureTable:
        """Take ``records`` (emission order); return the rows now complete, in emission order.

        ``watermark``: no record handed in later ends before it (``math.inf``: end of input)."""
        feats = np.zeros(len(records), FEATURE_DTYPE)
        if records:
            services = [record_service(r) for r in records]
            self._basic(records, services, feats)
            self._held.extend(records)
            self._held_feats = np.concatenate((self._held_feats, feats))
            self._held_ends = np.concatenate((self._held_ends, [end_time(r) for r in records]))
            self._held_srv.extend(services)
            self._held_done = np.concatenate((self._held_done, np.zeros(len(records), bool)))
        self._traffic(watermark)
        done = self._held_done
        ready = len(done) if done.all() else int(np.argmin(done))  # rows before the first not yet computed
        out, self._held = self._held[:ready], self._held[ready:]
        table = FeatureTable(self._held_feats[:ready], self._ids(out), self._labels(out), None, source)
        self._held_feats, self._held_ends = self._held_feats[ready:], self._held_ends[ready:]
        self._held_srv, self._held_done = self._held_srv[ready:], done[ready:]
        return table

    def pending(self) -> int:
        """Records held back by ``feed`` (waiting for the watermark or for an earlier record)."""
        return len(self._held)

    @staticmethod
    def _ids(records: Sequence[ConnectionRecord]) -> list[dict[str, object]]:
        return [{"uid": r.uid, "orig_h": r.orig_h, "orig_p": r.orig_p, "resp_h": r.resp_h, "resp_p": r.resp_p,
                 "proto": r.proto, "ts": r.ts} for r in records]

    @staticmethod
    def _basic(records: Sequence[ConnectionRecord], services: list[str], out: np.ndarray) -> None:
        out["duration"] = [r.duration for r in records]
        out["protocol_type"] = encode_categories("protocol_type", [r.proto for r in records])
        out["service"] = encode_categories("service", services)
        out["flag"] = encode_categories("flag", [r.conn_state for r in records])
        out["src_bytes"] = [r.orig_bytes for r in records]
        out["dst_bytes"] = [r.resp_bytes for r in records]
        out["land"] = [r.orig_p == r.resp_p and r.orig_h == r.resp_h for r in records]
        out["wrong_fragment"] = [r.wrong_fragment for r in records]
        out["urgent"] = [r.urgent for r in records]

    def _traffic(self, watermark: float) -> None:
        """Feed the held records that ended before ``watermark`` to the windows, in end order."""
        due = np.flatnonzero(~self._held_done & (self._held_ends < watermark))
        if not len(due):
            return
        order = due[np.argsort(self._held_ends[due], kind="stable")]
        recs, srv = self._held, self._held_srv
        picked = [recs[i] for i in order.tolist()]
        values = self.windows.push_many(
            self._held_ends[order], [r.resp_h for r in picked], [(r.proto, srv[i]) for r, i in zip(picked, order.tolist())],
            [r.orig_p for r in picked], [error_class(r.proto, r.conn_state) for r in picked])
        for j, name in enumerate(TRAFFIC_FEATURES):
            self._held_feats[name][order] = values[:, j]
        self._held_done[order] = True

    def _labels(self, records: Sequence[ConnectionRecord]) -> np.ndarray | None:
        col = self.label_column
        if not records or not col or not all(col in r.extra for r in records):
            return None
        return np.array([r.extra[col] for r in records], dtype=object)


def feature_table(records: Sequence[ConnectionRecord], time_window: float = 2.0, host_window: int = 100,
                  label_column: str | None = "label", source: str = "") -> FeatureTable:
    """One-shot: the FeatureTable of a complete list of records (fresh windows)."""
    return FeatureBuilder(time_window, host_window, label_column=label_column).add(records, source)
