"""End to end, as `make demo` runs it: built-in captures -> train -> score -> alerts."""

import json

import pytest

from sensor import demo


@pytest.mark.slow
def test_demo_catches_every_attack_with_few_false_alerts(tmp_path, capsys):
    assert demo.main(["--workdir", str(tmp_path), "--show", "1"]) == 0
    out = capsys.readouterr().out
    alerts = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert alerts and all(a["event_type"] == "alert" and a["alert"]["normalized_score"] >= 1 for a in alerts)
    assert all(a["alert"]["top_features"] for a in alerts)
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    by_kind: dict[str, list[bool]] = {}
    for row in rows:
        by_kind.setdefault(demo._attack_kind(row), []).append(row["normalized_score"] >= 1.0)
    assert set(by_kind) == {"normal", "port scan", "syn flood", "udp sweep"}
    for kind in ("port scan", "syn flood", "udp sweep"):
        assert sum(by_kind[kind]) / len(by_kind[kind]) >= 0.95, kind
    assert sum(by_kind["normal"]) / len(by_kind["normal"]) <= 0.05
