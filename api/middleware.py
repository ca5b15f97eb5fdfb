"""HTTP middlewares: request ids, and errors as JSON with stable codes.

A client never sees a stack trace: errors raised on purpose (core.errors.NapalmError) keep their
code and message; anything else is logged here with its traceback and answered as `internal`.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from core import context
from core.errors import ChallengeRequired, ErrorCode, NapalmError, RateLimited
from core.text import check_text

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 412,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CHALLENGE_REQUIRED: 429,
    ErrorCode.CHALLENGE_FAILED: 403,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

# aiohttp's own HTTP errors (unknown route, wrong method, body too large) mapped to our codes.
_CODE_BY_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_ARGUMENT,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_ARGUMENT,
    409: ErrorCode.ALREADY_EXISTS,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def error_response(
    code: ErrorCode, message: str, status: int | None = None, headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": {"code": code.value, "message": message, **(extra or {})}},
        status=status if status is not None else STATUS_BY_CODE[code],
        headers=headers,
    )


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Adopt a well-formed incoming X-Request-Id or make one; echo it; log with it."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = context.request_id.set(rid)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        context.request_id.reset(token)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        check_text(request.path, "path")
        for key, value in request.query.items():
            check_text(key, "query")
            check_text(value, f"query.{key}")
        return await handler(request)
    except RateLimited as exc:
        retry = str(max(1, int(exc.retry_after + 0.999)))
        extra: dict[str, object] | None = None
        if isinstance(exc, ChallengeRequired):
            extra = {"challenge": exc.challenge}
        return error_response(exc.code, exc.message, headers={"Retry-After": retry}, extra=extra)
    except NapalmError as exc:
        if exc.code is ErrorCode.INTERNAL:
            log.error("internal error on %s %s: %s", request.method, request.path, exc.message)
            return error_response(ErrorCode.INTERNAL, "internal error")
        return error_response(exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODE_BY_STATUS.get(exc.status, ErrorCode.INTERNAL)
        message = exc.reason.lower() if exc.reason else code.value
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(code, message, status=exc.status, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ErrorCode.INTERNAL, "internal error")
