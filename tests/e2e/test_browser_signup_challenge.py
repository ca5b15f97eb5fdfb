"""Chromium signs up past a spent sign-up budget by solving the proof-of-work in its Web Worker,
without the person doing anything but wait (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import SERVER_ENV, Pages
from tests.e2e.test_browser_call import sign_up
from tests.napalmsky.served import start_server, stop_server


@pytest.fixture
def tight_server(tmp_path: Path) -> Iterator[str]:
    """A node whose sign-up budget is one an hour, at a real difficulty (16 bits)."""
    env = {**SERVER_ENV, "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "1",
           "NAPALMSKY_SIGNUP_CHALLENGE_BITS": "16"}
    proc, url, _ = start_server(tmp_path, **env)
    try:
        yield url
    finally:
        stop_server(proc)


async def test_the_browser_solves_a_sign_up_challenge(tight_server: str, pages: Pages) -> None:
    spent = requests.post(f"{tight_server}/api/v1/auth/guest",
                          json={"name": "First", "gender": "female"}, timeout=10)
    assert spent.status_code == 201  # the address's free sign-up is gone
    page = await pages.new("cafe")
    answers: list[tuple[int, str]] = []

    async def note(response: Any) -> None:
        if response.url.endswith("/api/v1/auth/guest"):
            body = await response.json()
            answers.append((response.status, body.get("error", {}).get("code", "")))

    page.on("response", note)
    user_id = await sign_up(page, tight_server, "Second", "male")
    assert user_id
    assert answers[0] == (429, "challenge_required")
    assert answers[-1] == (201, "")
    assert await page.evaluate("window.__csp") == []  # the worker is allowed by the policy
    assert await page.locator("#error").is_hidden()
