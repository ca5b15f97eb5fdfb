"""Imports flow one way: core imports no framework; the media side never imports api/signaling."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"aiohttp", "aiortc", "aioice", "av", "sqlalchemy", "alembic", "redis", "boto3",
              "botocore", "asyncpg", "aiosqlite", "prometheus_client", "uvloop", "dotenv"}
OURS = {"core", "adapters", "api", "signaling", "sfu", "turn", "recorder", "loadtest", "web",
        "napalmsky", "bench"}


def imported_top_levels(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of `package` (relative imports excluded)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_scan_sees_imports() -> None:
    # Guard the guard: the scanner must find what napalmsky/ is known to import.
    seen = set().union(*imported_top_levels("napalmsky").values())
    assert {"aiohttp", "core", "adapters", "api"} <= seen


def test_core_imports_no_framework_and_nothing_of_ours() -> None:
    for path, names in imported_top_levels("core").items():
        assert not names & FRAMEWORKS, f"{path} imports {names & FRAMEWORKS}"
        assert not names & (OURS - {"core"}), f"{path} imports {names & (OURS - {'core'})}"


@pytest.mark.parametrize("package", ["sfu", "recorder", "turn"])
def test_media_side_never_imports_api_or_signaling(package: str) -> None:
    for path, names in imported_top_levels(package).items():
        assert not names & {"api", "signaling", "napalmsky"}, f"{path} imports {names}"


def test_loadtest_knows_the_node_only_through_the_wire_protocol() -> None:
    # Bots speak REST, /ws and /sfu/ws as any client does; nothing of the server is shared.
    server = {"core", "adapters", "api", "signaling", "sfu", "turn", "recorder", "web",
              "napalmsky", "bench"}
    for path, names in imported_top_levels("loadtest").items():
        assert not names & server, f"{path} imports {names & server}"


def test_adapters_import_only_core_of_ours() -> None:
    for path, names in imported_top_levels("adapters").items():
        assert not names & (OURS - {"core", "adapters"}), f"{path} imports {names & OURS}"


def test_only_the_composition_root_imports_adapters() -> None:
    for package in OURS - {"adapters", "napalmsky", "bench", "loadtest"}:
        for path, names in imported_top_levels(package).items():
            assert "adapters" not in names, f"{path} imports adapters"


@pytest.mark.parametrize("package", sorted(OURS))
def test_every_package_imports(package: str) -> None:
    __import__(package)

