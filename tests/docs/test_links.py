"""The documents in the repository point only at what the repository has.

Checked in README.md, docs/*.md and fuzz/README.md:
- every Markdown link or image with a relative target names a file or directory that exists
  (relative to the document; the `#anchor` part, if any, names a heading of that document);
- every document named in prose or in backticks (`something.md`) exists, relative to the
  document or to the repository root;
- every repository path in backticks that names a directory of ours (`tests/fuzz`, `docs/`)
  or a file in one (`tests/api/test_v1.py`) exists, unless .gitignore keeps it out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "fuzz" / "README.md"]
TOP_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
# Paths the documents may name that a checkout does not hold: what .gitignore keeps out.
IGNORED = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
           if line.strip() and not line.startswith("#")}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MD_NAME = re.compile(r"(?<![\w/.-])([\w./-]*[\w-]\.md)\b")
CODE = re.compile(r"`([^`\s]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", path.read_text(), re.M)}


def _exists(name: str, document: Path) -> bool:
    return (document.parent / name).exists() or (ROOT / name).exists()


def _problems(document: Path) -> list[str]:
    text = document.read_text()
    prose = FENCE.sub("", text)
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = document if not path else document.parent / path
        if not resolved.exists():
            problems.append(f"link to {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"link to {target}: no such heading")
    for name in MD_NAME.findall(prose):
        if not _exists(name, document):
            problems.append(f"names {name}, which the repository does not have")
    for token in CODE.findall(prose):
        path = token.rstrip("/")
        if "/" in token and path.split("/")[0] in TOP_DIRS and not any(
                c in path for c in "*{}<>$:?"):
            if not (ROOT / path).exists() and path not in IGNORED:
                problems.append(f"names `{token}`, which the repository does not have")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_named_file_exists(document: Path) -> None:
    assert document.is_file()
    assert _problems(document) == []


def test_the_checker_finds_what_is_missing(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text(
        "# Title\n\nSee [the guide](guide.md), [here](#title), [gone](#nowhere),\n"
        "DESIGN.md, `tests/no_such_test.py` and `docs/` and [site](https://example.org).\n")
    (tmp_path / "guide.md").write_text("# Guide\n")
    assert _problems(document) == [
        "link to #nowhere: no such heading",
        "names DESIGN.md, which the repository does not have",
        "names `tests/no_such_test.py`, which the repository does not have",
    ]
