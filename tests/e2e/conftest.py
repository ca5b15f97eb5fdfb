"""A real node process and headless Debian Chromium driven by Playwright.

Chromium comes from Debian (`.ci/run` installs it); Playwright's own browser download is never
used. On every run, the screens a test walks through (sign-up, deck, invite, call, after the
call) are saved as test-artifacts/screens/<test>-<page>-<screen>-<width>x<height>.png for a
reviewer to look at; on a failed test, each page's last screenshot and console log go to
test-artifacts/ as well.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.napalmsky.served import start_server, stop_server
from tests.services import missing

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENS = ARTIFACTS / "screens"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
SERVER_ENV = {
    "NAPALMSKY_RTC_BIND": "127.0.0.1", "NAPALMSKY_BCRYPT_ROUNDS": "4",
    "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000", "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000",
    "NAPALMSKY_RATE_LOGIN_PER_HOUR": "100000", "NAPALMSKY_CALL_MIN_SECONDS": "15",
    "NAPALMSKY_CALL_DEFAULT_SECONDS": "60", "NAPALMSKY_CALL_MAX_SECONDS": "600",
    "NAPALMSKY_LOG_FORMAT": "json", "NAPALMSKY_LOG_LEVEL": "info",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("chromium is not installed (.ci/run installs it with apt-get)")
    return path


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """`napalmsky serve` in its own process on a free port, all roles, embedded defaults."""
    proc, url, _ = start_server(tmp_path, **SERVER_ENV)
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=chromium_path,
                                                    args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            await instance.close()


class Pages:
    """Browser contexts of one test, with their console logs kept for failure reports."""

    def __init__(self, browser: Any, test_name: str = "test") -> None:
        self.browser = browser
        self.test_name = safe_name(test_name)
        self.pages: list[tuple[str, Any, list[str]]] = []

    async def new(self, name: str, width: int = 390, height: int = 844) -> Any:
        context = await self.browser.new_context(viewport={"width": width, "height": height})
        page = await context.new_page()
        # Content-Security-Policy violations, as the page reports them (checked by tests).
        await page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', "
            "(e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
        self.pages.append((name, page, console))
        return page

    def name_of(self, page: Any) -> str:
        return next(name for name, p, _ in self.pages if p is page)

    async def shoot(self, screen: str, *pages: Any) -> None:
        """Save what each page shows now as the screen `screen` (every run, not only on
        failure): the viewport as a user sees it, not the whole scrollable page."""
        SCREENS.mkdir(parents=True, exist_ok=True)
        for page in pages or [p for _, p, _ in self.pages]:
            size = page.viewport_size or {"width": 0, "height": 0}
            shot = SCREENS / (f"{self.test_name}-{self.name_of(page)}-{screen}-"
                              f"{size['width']}x{size['height']}.png")
            await page.screenshot(path=str(shot))

    async def save_artifacts(self, test_name: str) -> list[Path]:
        ARTIFACTS.mkdir(exist_ok=True)
        written: list[Path] = []
        safe = safe_name(test_name)
        for name, page, console in self.pages:
            shot = ARTIFACTS / f"{safe}-{name}.png"
            try:
                await page.screenshot(path=str(shot), full_page=True)
                written.append(shot)
            except Exception as exc:  # a crashed page still gets its console saved
                console.append(f"[screenshot failed] {exc}")
            log = ARTIFACTS / f"{safe}-{name}-console.txt"
            log.write_text("\n".join(console))
            written.append(log)
        return written


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")


@pytest.fixture
async def pages(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    collection = Pages(browser, request.node.name)
    try:
        yield collection
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for path in await collection.save_artifacts(request.node.name):
                print(f"artifact: {path}")
        for _, page, _ in collection.pages:
            await page.context.close()
