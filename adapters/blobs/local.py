"""Blob storage in a local directory, with HMAC-signed URLs served by the node itself.

Layout under `root`: a key `a/b/photo.jpg` is the file `a/b/photo.jpg@blob`, with its content type
in the sidecar `a/b/photo.jpg@meta`. Directories keep the key's own segment names. `@` cannot occur
in a key (core.blobs.check_key), so:
- no key addresses a sidecar, a temporary file (`.tmp-*`) or another key's file;
- a key may also be a prefix of other keys (`a` and `a/b` coexist, as in S3);
- no blob file is ever another one plus `.gz`/`.br`, which aiohttp's FileResponse would otherwise
  serve in its place to a client that accepts compressed encodings.

Writes are atomic and durable: each file is written to a temporary file in the same directory,
fsynced, then renamed into place, and the directory is fsynced. The sidecar is renamed before the
blob, so a blob never appears without its content type. Both renames happen under one lock, so
concurrent writers in this process never pair one writer's bytes with another's content type
(writers in other processes sharing the directory are not coordinated).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from core.blobs import BlobFile, check_key
from core.clock import Clock
from core.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# The longest link either adapter hands out: S3's SigV4 presigned URLs stop at seven days.
MAX_URL_EXPIRES_IN = 7 * 24 * 3600

_BLOB_SUFFIX = "@blob"
_META_SUFFIX = "@meta"
_TMP_PREFIX = ".tmp-"
_COPY_CHUNK = 1024 * 1024

_TCHARS = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_CONTENT_TYPE = re.compile(
    rf'^{_TCHARS}/{_TCHARS}(?:[ \t]*;[ \t]*{_TCHARS}=(?:{_TCHARS}|"[^"\\\x00-\x1f\x7f]*"))*$'
)
_EXPIRES = re.compile(r"^[0-9]{1,12}$")
_SIG = re.compile(r"^[0-9a-f]{64}$")


def check_content_type(content_type: str) -> str:
    """Refuse content types that are not a plain `type/subtype; param=value` (no header tricks)."""
    if len(content_type) > 255 or not _CONTENT_TYPE.match(content_type):
        raise InvalidArgument("invalid content type")
    return content_type


def check_expires_in(expires_in: int) -> int:
    if isinstance(expires_in, bool) or not 1 <= expires_in <= MAX_URL_EXPIRES_IN:
        raise InvalidArgument(f"expires_in must be between 1 and {MAX_URL_EXPIRES_IN} seconds")
    return expires_in


class LocalBlobStore:
    """core.blobs.BlobStore on a local directory. `root` is created if missing."""

    def __init__(self, root: Path, base_url: str, secret: bytes, clock: Clock) -> None:
        if len(secret) < 16:
            raise ValueError("the blob URL secret must be at least 16 bytes")
        self.root = root
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        # A key of its own, so URLs signed here mean nothing to other users of the same secret.
        self._signing_key = hmac.new(secret, b"napalmsky blob url v1", hashlib.sha256).digest()
        self._commit_lock = threading.Lock()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- paths --------------------------------------------------------------------------------

    def _paths(self, key: str) -> tuple[Path, Path]:
        *dirs, name = check_key(key).split("/")
        parent = self.root.joinpath(*dirs)
        return parent / (name + _BLOB_SUFFIX), parent / (name + _META_SUFFIX)

    # -- the port -----------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        blob, meta = self._paths(key)
        check_content_type(content_type)
        await asyncio.to_thread(self._store, blob, meta, lambda f: f.write(data), content_type)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        blob, meta = self._paths(key)
        check_content_type(content_type)

        def copy(dst: BinaryIO) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)

        await asyncio.to_thread(self._store, blob, meta, copy, content_type)

    async def get(self, key: str) -> bytes:
        blob, _ = self._paths(key)
        try:
            return await asyncio.to_thread(blob.read_bytes)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound("blob not found") from None

    async def exists(self, key: str) -> bool:
        blob, _ = self._paths(key)
        return await asyncio.to_thread(blob.is_file)

    async def delete(self, key: str) -> None:
        blob, meta = self._paths(key)
        await asyncio.to_thread(self._remove, blob, meta)

    async def url(self, key: str, expires_in: int) -> str:
        check_key(key)
        expires = str(int(self.clock.time()) + check_expires_in(expires_in))
        return f"{self.base_url}/blobs/{key}?expires={expires}&sig={self._sign(key, expires)}"

    async def ping(self) -> None:
        ok = await asyncio.to_thread(
            lambda: self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
        )
        if not ok:
            raise Unavailable("blob directory is missing or not writable")

    async def close(self) -> None:
        return None

    # -- serving signed URLs ------------------------------------------------------------------

    def verify(self, key: str, expires: str, sig: str) -> None:
        """Accept a URL made by `url()` that has not expired; raise PermissionDenied otherwise.

        An invalid key raises InvalidArgument before the signature is looked at.
        """
        check_key(key)
        if not _EXPIRES.match(expires) or not _SIG.match(sig):
            raise PermissionDenied("invalid signature")
        if not hmac.compare_digest(self._sign(key, expires).encode(), sig.encode()):
            raise PermissionDenied("invalid signature")
        if self.clock.time() >= int(expires):
            raise PermissionDenied("link expired")

    async def open_for_serving(self, key: str) -> BlobFile:
        """The file and content type of `key`; NotFound when absent. Check `verify` first."""
        blob, meta = self._paths(key)
        found = await asyncio.to_thread(self._stat_with_type, blob, meta)
        if found is None:
            raise NotFound("blob not found")
        return found

    def _sign(self, key: str, expires: str) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    # -- blocking helpers (run in a worker thread) --------------------------------------------

    def _store(
        self, blob: Path, meta: Path, write: Callable[[BinaryIO], object], content_type: str
    ) -> None:
        self._make_dirs(blob.parent)
        meta_body = json.dumps({"content_type": content_type}).encode()
        meta_tmp = _write_temp(meta.parent, lambda f: f.write(meta_body))
        try:
            blob_tmp = _write_temp(blob.parent, write)
        except BaseException:
            _unlink(meta_tmp)
            raise
        try:
            with self._commit_lock:
                os.replace(meta_tmp, meta)
                os.replace(blob_tmp, blob)
        except BaseException:
            _unlink(meta_tmp)
            _unlink(blob_tmp)
            raise
        _fsync_dir(blob.parent)

    def _remove(self, blob: Path, meta: Path) -> None:
        with self._commit_lock:
            try:
                blob.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
            except NotADirectoryError:
                return
        if blob.parent.is_dir():
            _fsync_dir(blob.parent)

    def _stat_with_type(self, blob: Path, meta: Path) -> BlobFile | None:
        with self._commit_lock:
            if not blob.is_file():
                return None
            try:
                raw = json.loads(meta.read_bytes())
            except (OSError, ValueError):
                raw = None
        content_type = raw.get("content_type") if isinstance(raw, dict) else None
        if not isinstance(content_type, str) or not _CONTENT_TYPE.match(content_type):
            content_type = DEFAULT_CONTENT_TYPE
        return BlobFile(blob, content_type)

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and its missing parents under root, each entry made durable."""
        missing: list[Path] = []
        while directory != self.root and not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            with suppress(FileExistsError):
                d.mkdir(mode=0o700)
            _fsync_dir(d.parent)


def _write_temp(directory: Path, write: Callable[[BinaryIO], object]) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: Path) -> None:
    with suppress(OSError):
        path.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
