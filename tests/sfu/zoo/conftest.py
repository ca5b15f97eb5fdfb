"""Fixtures of the client zoo: the SFU with headless Chromium clients (see chromium.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import chromium_path
from tests.sfu.conftest import one_port_net
from tests.sfu.zoo.chromium import ChromiumSfu, noise_camera, open_chromium_sfu

__all__ = ["chromium_path", "chromium_sfu", "chromium_sfu_noise", "chromium_sfu_one_port"]


@pytest.fixture
async def chromium_sfu(chromium_path: str) -> AsyncIterator[ChromiumSfu]:
    """The SFU and a Chromium with its fake camera (a simple moving picture)."""
    async with open_chromium_sfu(chromium_path) as harness:
        yield harness


@pytest.fixture
async def chromium_sfu_noise(chromium_path: str) -> AsyncIterator[ChromiumSfu]:
    """The SFU and a Chromium whose camera films noise (see noise_camera)."""
    clip = await asyncio.to_thread(noise_camera)
    async with open_chromium_sfu(
        chromium_path, [f"--use-file-for-fake-video-capture={clip}"]) as harness:
        yield harness


@pytest.fixture
async def chromium_sfu_one_port(chromium_path: str) -> AsyncIterator[ChromiumSfu]:
    """The SFU with every connection on one shared UDP port, and a Chromium."""
    async with open_chromium_sfu(chromium_path, net=one_port_net()) as harness:
        yield harness
