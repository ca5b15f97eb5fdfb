"""Logging set-up: readable lines for development, one JSON object per line for production.

Context ids (request, user, room, node) come from core.context and are added to every record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from core import context
from core.settings import LogFormat


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = context.current()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx: dict[str, str] = getattr(record, "ctx", {})
        if ctx:
            line += " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "ctx", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(fmt: LogFormat, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries are chatty at debug, and the database drivers log statements with their
    # parameters (password hashes, emails, chat text): they stay at warning at every level.
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


QUIET_LOGGERS = ("aioice", "aiortc", "botocore", "boto3", "urllib3", "s3transfer",
                 "alembic.runtime.plugins", "alembic.runtime.migration", "sqlalchemy",
                 "aiosqlite", "asyncpg", "redis",
                 "PIL", "aiohttp.access", "aiohttp.websocket", "aiohttp.client")


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without its query string (signed URLs carry their
    signature there), status, size and duration; never a header or a body."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %.1fms", request.method, request.path, response.status,
            response.body_length, time * 1000,
        )
