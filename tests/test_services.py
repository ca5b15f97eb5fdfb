"""The test harness itself: a service CI needs must fail the run when it is missing."""

from __future__ import annotations

import pytest


def test_a_missing_service_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.services import require

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"required in CI"):
        require("Redis", "127.0.0.1:1: refused")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        require("Redis", "127.0.0.1:1: refused")
    require("Redis", None)  # reachable: no effect
