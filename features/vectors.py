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
from collections.abc import Hashable, Sequence

import numpy as np

from features.records import ConnectionRecord
from features.schema import FEATURE_DTYPE, SERVICE_VALUES, encode_categories
from features.services import kdd_service_cached
from features.table import FeatureTable
from features.windows import TRAFFIC_FEATURES, TrafficWindows, error_classes


def end_times(records: Sequence[ConnectionRecord]) -> np.ndarray:
    """When each connection ended: ``end_ts`` where the tracker set it, else ``ts + duration`` (conn.log);
    the later of the two."""
    if not records:
        return np.zeros(0)
    end_ts = np.array([r.end_ts for r in records], dtype=np.float64)
    stop = np.array([r.ts for r in records], dtype=np.float64) + [r.duration for r in records]
    return np.where(stop > end_ts, stop, end_ts)


def service_keys(records: Sequence[ConnectionRecord], feats: np.ndarray) -> list[Hashable]:
    """What "same service" compares in the windows: the KDD service within its protocol (``tcp/private``
    and ``udp/private`` differ). An int (protocol and service codes) for TCP, UDP and ICMP; the protocol
    text for any other IP protocol, whose service is always ``other``."""
    proto = feats["protocol_type"].astype(np.int64)
    keys: list[Hashable] = (proto * len(SERVICE_VALUES) + feats["service"]).tolist()
    for i in np.flatnonzero(proto < 0).tolist():
        keys[i] = records[i].proto
    return keys


class FeatureBuilder:
    """Turns records into FEATURE_DTYPE rows; window state persists across ``add`` calls."""

    def __init__(self, time_window: float = 2.0, host_window: int = 100, max_entries: int = 1_000_000,
                 label_column: str | None = "label", min_group: int = 1) -> None:
        self.windows = TrafficWindows(time_window, host_window, max_entries)
        self.label_column = label_column
        # ``feed`` computes windows only for at least this many records at a time (or at the end of input):
        # each computation also passes over the remembered rows, so a file is cheaper in large groups,
        # while the daemon keeps 1 to score every connection as soon as the watermark passes it
        self.min_group = min_group
        # records handed to ``feed`` whose rows are not returned yet (emission order); the first
        # len(self._feats) of them have their rows (basic features; traffic ones where ``_done``) and end
        # times in ``_ends``, the later ones only their end times, in ``_new_ends``
        self._held: list[ConnectionRecord] = []
        self._feats = np.zeros(0, FEATURE_DTYPE)
        self._ends = np.zeros(0)
        self._done = np.zeros(0, bool)
        self._new_ends = np.zeros(0)

    @classmethod
    def from_config(cls, cfg, min_group: int = 1) -> "FeatureBuilder":
        """Built from ``cfg.section("windows")`` and ``model.label_column``."""
        w = cfg.section("windows")
        return cls(w["time_window"], w["host_window"], w["max_entries"], cfg["model.label_column"], min_group)

    def add(self, records: Sequence[ConnectionRecord], source: str = "") -> FeatureTable:
        """Feature rows for ``records`` (in their order, after any still held by ``feed``), with ids and, if
        every record has one, labels."""
        return self.feed(records, math.inf, source)

    def feed(self, records: Sequence[ConnectionRecord], watermark: float, source: str = "") -> FeatureTable:
        """Take ``records`` (emission order); return the rows now complete, in emission order.

        ``watermark``: no record handed in later ends before it (``math.inf``: end of input)."""
        if records:  # a live source feeds many empty batches: they must cost nothing
            self._held.extend(records)
            self._new_ends = np.concatenate((self._new_ends, end_times(records)))
        due = np.count_nonzero(self._ends[~self._done] < watermark) + np.count_nonzero(self._new_ends < watermark)
        if not due or (due < self.min_group and watermark != math.inf):
            return FeatureTable(np.zeros(0, FEATURE_DTYPE), source=source)
        self._take_new()
        self._traffic(watermark)
        done = self._done
        ready = len(done) if done.all() else int(np.argmin(done))  # rows before the first not yet computed
        out, self._held = self._held[:ready], self._held[ready:]
        table = FeatureTable(self._feats[:ready], self._ids(out), self._labels(out), None, source)
        self._feats, self._ends, self._done = self._feats[ready:], self._ends[ready:], done[ready:]
        return table

    def pending(self) -> int:
        """Records held back by ``feed`` (waiting for the watermark or for an earlier record)."""
        return len(self._held)

    def _take_new(self) -> None:
        """Basic features of the records that have none yet, appended to the held rows."""
        new = self._held[len(self._feats):]
        feats = np.zeros(len(new), FEATURE_DTYPE)
        if new:
            self._basic(new, feats)
        self._feats = np.concatenate((self._feats, feats))
        self._ends = np.concatenate((self._ends, self._new_ends))
        self._done = np.concatenate((self._done, np.zeros(len(new), bool)))
        self._new_ends = np.zeros(0)

    @staticmethod
    def _ids(records: Sequence[ConnectionRecord]) -> list[dict[str, object]]:
        return [{"uid": r.uid, "orig_h": r.orig_h, "orig_p": r.orig_p, "resp_h": r.resp_h, "resp_p": r.resp_p,
                 "proto": r.proto, "ts": r.ts} for r in records]

    @staticmethod
    def _basic(records: Sequence[ConnectionRecord], out: np.ndarray) -> None:
        proto = [r.proto for r in records]
        orig_p, resp_p = [r.orig_p for r in records], [r.resp_p for r in records]
        out["duration"] = [r.duration for r in records]
        out["protocol_type"] = encode_categories("protocol_type", proto)
        out["service"] = encode_categories("service", map(kdd_service_cached, proto, orig_p, resp_p,
                                                          [":" in r.orig_h for r in records]))
        out["flag"] = encode_categories("flag", [r.conn_state for r in records])
        out["src_bytes"] = [r.orig_bytes for r in records]
        out["dst_bytes"] = [r.resp_bytes for r in records]
        out["land"] = [r.orig_p == r.resp_p and r.orig_h == r.resp_h for r in records]
        out["wrong_fragment"] = [r.wrong_fragment for r in records]
        out["urgent"] = [r.urgent for r in records]

    def _traffic(self, watermark: float) -> None:
        """Feed the held records that ended before ``watermark`` to the windows, in end order."""
        due = np.flatnonzero(~self._done & (self._ends < watermark))
        order = due[np.argsort(self._ends[due], kind="stable")]
        picked = [self._held[i] for i in order.tolist()]
        rows = self._feats[order]
        values = self.windows.push_many(
            self._ends[order], [r.resp_h for r in picked], service_keys(picked, rows),
            [r.orig_p for r in picked], error_classes(rows["protocol_type"], rows["flag"]))
        for j, name in enumerate(TRAFFIC_FEATURES):
            self._feats[name][order] = values[:, j]
        self._done[order] = True

    def _labels(self, records: Sequence[ConnectionRecord]) -> np.ndarray | None:
        col = self.label_column
        if not records or not col or not all(col in r.extra for r in records):
            return None
        return np.array([r.extra[col] for r in records], dtype=object)


def feature_table(records: Sequence[ConnectionRecord], time_window: float = 2.0, host_window: int = 100,
                  label_column: str | None = "label", source: str = "") -> FeatureTable:
    """One-shot: the FeatureTable of a complete list of records (fresh windows)."""
    return FeatureBuilder(time_window, host_window, label_column=label_column).add(records, source)
