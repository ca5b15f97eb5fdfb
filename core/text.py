"""Text a database can store: no NUL characters and no unpaired surrogates.

PostgreSQL refuses both in text columns (and SQLite stores them, so the two would disagree);
JSON can carry either (`"\\u0000"`, `"\\ud800"`). Every text input (REST bodies, path and query
parameters, WebSocket frames) is checked here once, at the edge, so the error names the field
instead of surfacing as a database failure.
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidArgument

UNSTORABLE = "contains a NUL character or an unpaired surrogate, which cannot be stored"
MAX_DEPTH = 32


def storable(text: str) -> bool:
    """False for text with a NUL character or an unpaired UTF-16 surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, where: str, depth: int = 0) -> None:
    """Raise InvalidArgument naming the field (`where`, dotted) of the first string, key
    included, that cannot be stored; lists and objects are walked."""
    if isinstance(value, str):
        if not storable(value):
            raise InvalidArgument(f"{where}: {UNSTORABLE}")
    elif depth < MAX_DEPTH and isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if isinstance(key, str) and storable(key) else where
            if isinstance(key, str) and not storable(key):
                raise InvalidArgument(f"{where}: a key {UNSTORABLE}")
            check_text(item, name, depth + 1)
    elif depth < MAX_DEPTH and isinstance(value, list):
        for index, item in enumerate(value):
            check_text(item, f"{where}[{index}]", depth + 1)
