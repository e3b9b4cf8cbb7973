"""Features of real small captures and a conn.log against stored golden rows (tests/golden/regenerate.py)."""

from __future__ import annotations

import json

import pytest

from features.schema import CATEGORICAL_VOCABULARIES
from sensor.outputs import INTEGER_FEATURES
from tests.golden.regenerate import HERE, INPUTS, golden_rows

EXACT = INTEGER_FEATURES | set(CATEGORICAL_VOCABULARIES) | {"orig_h", "orig_p", "resp_h", "resp_p", "proto", "label"}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_golden(name, data_dir):
    expected = [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]
    actual = golden_rows(name)
    assert len(actual) == len(expected)
    for k, (got, want) in enumerate(zip(actual, expected)):
        assert got.keys() == want.keys(), f"row {k}"
        for key, value in want.items():
            if key in EXACT:
                assert got[key] == value, f"row {k} {key}"
            else:
                assert got[key] == pytest.approx(value, abs=1e-9), f"row {k} {key}"
