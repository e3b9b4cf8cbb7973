"""Shared test fixtures: where the third-party data lives (NETWARDEN_DATA, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import scapy.layers.l2  # noqa: F401  (creates conf.neighbor)
from scapy.config import conf

# No traffic leaves the tests: scapy resolves the destination MAC of a crafted Ether()/IP() frame by
# sending an ARP request on the host's interface (and waits 3 s for an answer). Crafted frames need no
# real neighbour: without a resolver scapy uses the broadcast address, offline and at once.
conf.neighbor.resolve = lambda l2, l3: None

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NETWARDEN_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA}: set NETWARDEN_DATA")
    return DATA
