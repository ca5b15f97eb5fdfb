from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.turn.coturn import Coturn, running_coturn


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """A real coturn on 127.0.0.1 (free ports), configured by `napalmsky turn config`."""
    with running_coturn(tmp_path / "coturn") as server:
        yield server
