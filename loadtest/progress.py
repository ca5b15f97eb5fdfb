"""The live progress display of a load test (rich), on stderr."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from loadtest.scenario import Scenario


class ProgressView:
    """`with ProgressView(scenario) as view: view.update(progress, elapsed, server)`."""

    def __init__(self, scenario: Scenario, url: str, console: Console | None = None) -> None:
        self.scenario = scenario
        self.url = url
        self.console = console or Console(stderr=True)
        self._live = Live(self._render({}, 0.0, None), console=self.console,
                          refresh_per_second=2, transient=False)

    def __enter__(self) -> ProgressView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, progress: dict[str, Any], elapsed: float,
               server: dict[str, float] | None) -> None:
        self._live.update(self._render(progress, elapsed, server))

    def _render(self, progress: dict[str, Any], elapsed: float,
                server: dict[str, float] | None) -> Group:
        s = self.scenario
        states: dict[str, int] = progress.get("states", {})
        c: dict[str, int] = progress.get("counters", {})
        errors: dict[str, int] = progress.get("errors", {})
        elapsed = max(0.0, min(elapsed, s.duration_s))
        head = Text.assemble(("napalmsky loadtest ", "bold"), (s.name, "bold cyan"),
                             f"  {self.url}  {elapsed:5.0f} / {s.duration_s:.0f} s")
        bar = ProgressBar(total=s.duration_s, completed=elapsed, width=60)
        table = Table.grid(padding=(0, 3))
        table.add_column(style="dim")
        table.add_column(justify="right")
        table.add_column(style="dim")
        table.add_column(justify="right")
        online = states.get("online", 0) + states.get("in_call", 0)
        table.add_row("users online", f"{online} / {s.users}", "signed up",
                      f"{c.get('signup_ok', 0)} ({c.get('signup_failed', 0)} failed)")
        table.add_row("in a call", str(states.get("in_call", 0)), "media connected",
                      str(progress.get("connected_calls", 0)))
        table.add_row("calls started", str(c.get("calls_started", 0) // 2), "invites sent",
                      str(c.get("invites_sent", 0)))
        table.add_row("server CPU", "-" if not server or "cpu_pct" not in server
                      else f"{server['cpu_pct']:.0f} %", "server RSS",
                      "-" if not server or "rss_mb" not in server
                      else f"{server['rss_mb']:.0f} MiB")
        top = sorted(errors.items(), key=lambda kv: -kv[1])[:4]
        err = Text("errors: " + (", ".join(f"{k} {v}" for k, v in top) if top else "none"),
                   style="red" if top else "green")
        return Group(head, bar, table, err)
