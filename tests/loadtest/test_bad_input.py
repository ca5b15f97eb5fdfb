"""Bad parameters and unusable targets: one clear line, a non-zero exit, no bot started."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.loadtest.conftest import napalmsky
from tests.services import free_port


@pytest.fixture(scope="module")
def not_a_node() -> Iterator[str]:
    """A web server that is not Napalm Sky: 404 for everything."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("args", "says"), [
    (["--users", "-3"], "--users must be at least 1"),
    (["--users", "1"], "--users must be at least 2 for calls"),
    (["--preset", "stampede"], "unknown preset 'stampede'"),
    (["--processes", "0"], "--processes must be between 1 and 256"),
    (["--decline", "0.8", "--expire", "0.5"], "--decline plus --expire must be at most 1"),
    (["--duration", "-1"], "--duration must be positive"),
    (["--preset", "idle", "--browse", "-5"], "--browse must be zero or positive"),
    (["--users", "many"], "argument --users: invalid int value: 'many'"),
    (["ftp://example.org"], "URL must be http://host[:port]"),
])
def test_bad_parameters_are_refused_in_one_line(tmp_path: Path, args: list[str],
                                                 says: str) -> None:
    result = napalmsky("loadtest", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("napalmsky loadtest: ")
    assert not list(tmp_path.glob("loadtest-*"))


def test_an_unreachable_url_is_refused_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = napalmsky("loadtest", url, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napalmsky loadtest: error: cannot reach {url}")
    assert not list(tmp_path.glob("loadtest-*"))


def test_a_url_that_is_not_a_node_is_refused_in_one_line(tmp_path: Path,
                                                         not_a_node: str) -> None:
    for command in (["loadtest"], ["bots", "--count", "1"]):
        result = napalmsky(*command, not_a_node, cwd=tmp_path, timeout=60)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{not_a_node} is not a Napalm Sky node" in lines[0]


def test_bad_bot_counts_are_refused(tmp_path: Path) -> None:
    result = napalmsky("bots", "--count", "0", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "napalmsky bots: error: --count must be between 1 and 50"


@pytest.mark.parametrize("command", ["loadtest", "bots"])
def test_help(tmp_path: Path, command: str) -> None:
    result = napalmsky(command, "--help", cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    assert f"usage: napalmsky {command}" in result.stdout
