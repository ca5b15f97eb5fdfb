"""A real coturn (Debian's `turnserver`) on 127.0.0.1, configured by `napalmsky turn config`."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aioice import stun

from tests.services import missing

SECRET = "turn-test-secret-0123456789"  # the one that signs
OLD_SECRET = "turn-old-secret-9876543210"  # still accepted: a rotation in progress
REALM = "napalmsky.test"


def _free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def turn_env(port: int, relay_min: int, relay_max: int) -> dict[str, str]:
    """The NAPALMSKY_TURN_* settings of the test relay."""
    return {
        "NAPALMSKY_TURN_SECRETS": f"{SECRET},{OLD_SECRET}",
        "NAPALMSKY_TURN_REALM": REALM,
        "NAPALMSKY_TURN_LISTEN_IPS": "127.0.0.1",
        "NAPALMSKY_TURN_RELAY_IPS": "127.0.0.1",
        "NAPALMSKY_TURN_PORT": str(port),
        "NAPALMSKY_TURN_RELAY_PORT_MIN": str(relay_min),
        "NAPALMSKY_TURN_RELAY_PORT_MAX": str(relay_max),
    }


def render_config(tmp_path: Path, env: dict[str, str], *extra: str,
                  allow_loopback: bool = True) -> Path:
    """`napalmsky turn config [--allow-loopback] --output <file>` with `env`'s settings."""
    path = tmp_path / "turnserver.conf"
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("NAPALMSKY_")}
    run_env.update(env)
    run_env["NAPALMSKY_ENV_FILE"] = str(tmp_path / "no.env")
    switch = ["--allow-loopback"] if allow_loopback else []
    subprocess.run([sys.executable, "-m", "napalmsky", "turn", "config", *switch,
                    "--output", str(path)], env=run_env, check=True, capture_output=True,
                   timeout=60)
    if extra:
        with path.open("a") as out:
            out.write("\n".join(extra) + "\n")
    return path


class Coturn:
    """coturn started on free ports; `url(transport)` is its turn: URL."""

    def __init__(self, tmp_path: Path, *, allow_loopback: bool = True) -> None:
        binary = shutil.which("turnserver")
        if binary is None:
            missing("coturn's turnserver is not installed (apt-get install coturn)")
        self.binary = str(binary)
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp_path = tmp_path
        self.port = _free_udp_and_tcp_port()
        base = random.randrange(40000, 59000, 100)
        self.relay_range = (base, base + 99)
        self.env = turn_env(self.port, *self.relay_range)
        self.config = render_config(tmp_path, self.env, f"pidfile={tmp_path / 'turn.pid'}",
                                    f"userdb={tmp_path / 'turndb'}",
                                    allow_loopback=allow_loopback)
        self.log = tmp_path / "coturn.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, transport: str = "udp") -> str:
        return f"turn:127.0.0.1:{self.port}?transport={transport}"

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("coturn did not start:\n" + self.log.read_text()[-3000:])

    def _answers(self) -> bool:
        """A STUN Binding request over UDP gets a success response (coturn is serving)."""
        request = stun.Message(message_method=stun.Method.BINDING,
                               message_class=stun.Class.REQUEST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.sendto(bytes(request), ("127.0.0.1", self.port))
                data = sock.recv(2048)
            except OSError:
                return False
        response = stun.parse_message(data)
        return (response.message_class == stun.Class.RESPONSE
                and response.transaction_id == request.transaction_id)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running_coturn(path: Path) -> Iterator[Coturn]:
    """A started Coturn in `path`, stopped on exit."""
    server = Coturn(path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
