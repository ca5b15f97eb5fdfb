"""Port for blob storage: selfies, intro videos, posters and recordings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple, Protocol

from core.clock import Clock
from core.errors import InvalidArgument

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_KEY_LENGTH = 512


def check_key(key: str) -> str:
    """Refuse keys that could escape a directory or confuse a URL; return the key unchanged."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.match(key) or ".." in key.split("/"):
        raise InvalidArgument("invalid blob key")
    return key


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there."""
        ...

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key` without reading it all into memory."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under `key`; raise core.errors.NotFound when absent."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove `key`; removing an absent key is not an error."""
        ...

    async def url(self, key: str, expires_in: int) -> str:
        """A URL that fetches `key` without other credentials until `expires_in` seconds pass."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise core.errors.Unavailable otherwise."""
        ...

    async def close(self) -> None: ...


class BlobFile(NamedTuple):
    """What the HTTP route needs to serve a blob from local disk."""

    path: Path
    content_type: str


class ServedBlobs(Protocol):
    """A blob store whose signed URLs this node serves itself (the local directory)."""

    @property
    def clock(self) -> Clock: ...

    def verify(self, key: str, expires: str, sig: str) -> None:
        """Raise PermissionDenied unless `sig` signs `key` until `expires`, still in the future."""
        ...

    async def open_for_serving(self, key: str) -> BlobFile:
        """The file and content type of `key`; raise NotFound when absent."""
        ...
