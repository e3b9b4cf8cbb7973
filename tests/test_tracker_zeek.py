"""Our connection records against Zeek's own conn.log baselines (the test of record for the tracker)."""

from __future__ import annotations

from pathlib import Path

from tests.zeek_baselines import differences

FIXTURE = Path(__file__).parent / "fixtures" / "zeek_known_differences.tsv"


def _known() -> dict[tuple[str, ...], str]:
    rows = {}
    for line in FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            *key, reason = line.split("\t")
            assert reason, f"fixture row without a reason: {line}"
            rows[tuple(key)] = reason
    return rows


def test_tracker_matches_zeek_baselines(data_dir):
    total, agree, diffs = differences(data_dir / "zeek")
    known = _known()
    new = sorted(diffs - set(known))
    gone = sorted(set(known) - diffs)
    assert not new, "new differences from Zeek:\n" + "\n".join("\t".join(d) for d in new)
    assert not gone, "listed differences that no longer occur (update the fixture):\n" + \
        "\n".join("\t".join(d) for d in gone)
    # Connections we cannot see because the packet decoder does not handle their link type or tunnel are
    # the decoder's to fix; of the rest, at least 95% must agree with Zeek on every compared field.
    unseen = [k for k, reason in known.items() if reason.startswith("decoder:") and k[2:4] == ("record", "absent")]
    visible = total - len(unseen)
    assert total >= 100
    assert agree / visible >= 0.95, f"{agree}/{visible} visible connections agree"
