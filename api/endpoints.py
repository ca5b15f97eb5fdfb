"""Endpoint declarations: one list drives both the aiohttp routes and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.middleware import STATUS_BY_CODE
from api.schemas import ErrorResponse
from core.errors import ErrorCode, InvalidArgument, PayloadTooLarge, UnsupportedMediaType
from core.text import check_text

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["none", "user", "admin"]
M = TypeVar("M", bound=BaseModel)

#: Seconds a request body may take to arrive (NAPALMSKY_HTTP_BODY_TIMEOUT); set by the app.
BODY_TIMEOUT = web.AppKey("body_timeout", float)
DEFAULT_BODY_TIMEOUT = 30.0
JSON_BODY_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth = "none"
    request: type[BaseModel] | None = None
    request_media: tuple[str, ...] = ()  # a raw body (uploads) instead of a JSON `request`
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[ErrorCode, ...] = ()
    #: Path and query parameters, a field each: those named `{like_this}` in the path are path
    #: parameters, the others query parameters. Checked before the handler runs (400).
    params: type[BaseModel] | None = None
    #: Longer words for the document than the summary (limits, retries).
    description: str | None = None

    def parameters(self) -> type[BaseModel] | None:
        return self.params

    def error_codes(self) -> list[ErrorCode]:
        # Every request's path and query are checked for storable text (400), and a backing
        # service may be down (503) or a budget spent (429).
        codes = set(self.errors) | {ErrorCode.INVALID_ARGUMENT, ErrorCode.RATE_LIMITED,
                                    ErrorCode.UNAVAILABLE}
        if self.request is not None:  # parse_body: not JSON (415), over 1 MB (413)
            codes |= {ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.PAYLOAD_TOO_LARGE}
        if self.auth != "none":
            codes.add(ErrorCode.UNAUTHENTICATED)
        if self.auth == "admin":
            codes.add(ErrorCode.PERMISSION_DENIED)
        return sorted(codes, key=lambda c: (STATUS_BY_CODE[c], c.value))


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`; InvalidArgument with a readable reason otherwise."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("request body must be application/json")
    raw = await read_body(request, JSON_BODY_MAX_BYTES, "request body is larger than 1 MB")
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidArgument("request body is not valid JSON") from None
    check_text(data, "body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidArgument(f"{where}: {first['msg']}") from None


async def read_body(request: web.Request, max_bytes: int, too_large: str) -> bytes:
    """The whole request body, at most `max_bytes` long, read within the app's body timeout.

    Raises PayloadTooLarge (`too_large` is its message) past `max_bytes`, and
    InvalidArgument when the body arrives slower than BODY_TIMEOUT seconds in all: a
    slow-body (slowloris) client gets its 400 and, the rest of its body unread, aiohttp
    closes the connection after its lingering time, instead of the client holding a handler.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(too_large)
    data = bytearray()
    try:
        async with asyncio.timeout(request.config_dict.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)):
            async for chunk in request.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise PayloadTooLarge(too_large)
    except TimeoutError:
        raise InvalidArgument("the request body took too long to arrive") from None
    return bytes(data)


async def receive_file(request: web.Request, path: Path, max_bytes: int, too_large: str) -> int:
    """Stream the request body into a new file at `path` (never held whole in memory), at
    most `max_bytes`; returns its size. Raises PayloadTooLarge (`too_large`) past the limit and
    InvalidArgument when no data arrives for the app's body timeout (a stalled or slow-drip
    client), unlike `read_body` not a limit on the whole upload: a 50 MB video over a phone's
    uplink takes minutes. The caller removes `path` whatever happens."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(too_large)
    idle = request.config_dict.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)
    size = 0
    with path.open("xb") as out:
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await request.content.readany()
            except TimeoutError:
                raise InvalidArgument("the upload stalled") from None
            if not chunk:
                return size
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(too_large)
            out.write(chunk)


def dump(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def parse_params(request: web.Request, model: type[M]) -> M:
    """The request's path and query parameters as `model` (other query parameters are
    ignored); InvalidArgument naming the parameter otherwise, a repeated one included."""
    data: dict[str, str] = {}
    for name in model.model_fields:
        if name in request.match_info:
            data[name] = request.match_info[name]
            continue
        values = request.query.getall(name, [])
        if len(values) > 1:
            raise InvalidArgument(f"{name} must be given once")
        if values:
            data[name] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "parameters"
        raise InvalidArgument(f"{where}: {first['msg']}") from None


def _checking_params(handler: Handler, model: type[BaseModel]) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        parse_params(request, model)
        return await handler(request)

    return checked


def routes(endpoints: Sequence[Endpoint]) -> list[web.RouteDef]:
    defs = []
    for e in endpoints:
        params = e.parameters()
        handler = e.handler if params is None else _checking_params(e.handler, params)
        defs.append(web.route(e.method, e.path, handler))
    return defs


def _parameters(e: Endpoint, model: type[BaseModel] | None) -> list[dict[str, Any]]:
    names = [p[1:-1] for p in e.path.split("/") if p.startswith("{")]
    if model is None:
        return [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in names]
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        where = "path" if name in names else "query"
        parameter: dict[str, Any] = {"name": name, "in": where,
                                     "required": where == "path" or name in required,
                                     "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    missing = set(names) - set(schema["properties"])
    if missing:
        raise ValueError(f"{e.method} {e.path}: no parameter declared for {sorted(missing)}")
    return parameters


def openapi(endpoints: Sequence[Endpoint], *, title: str, version: str,
            description: str | None = None) -> dict[str, Any]:
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_ref = ref(ErrorResponse)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "summary": e.summary,
            "operationId": f"{e.method.lower()}_{e.path.strip('/').replace('/', '_')}"
            .replace("{", "").replace("}", "").replace("-", "_"),
            "responses": {},
        }
        descriptions = [e.description] if e.description else []
        if e.auth != "none":
            operation["security"] = [{"bearerAuth": []}]
            if e.auth == "admin":
                descriptions.insert(0, "Admins only, with a session that passed TOTP.")
        if descriptions:
            operation["description"] = " ".join(descriptions)
        parameters = _parameters(e, e.parameters())
        if parameters:
            operation["parameters"] = parameters
        if e.request is not None:
            operation["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": ref(e.request)}}}
        elif e.request_media:
            operation["requestBody"] = {"required": True, "content": {
                m: {"schema": {"type": "string", "contentMediaType": m}} for m in e.request_media
            }}
        if e.response is not None:
            operation["responses"][str(e.status)] = {
                "description": "OK", "content": {"application/json": {"schema": ref(e.response)}}}
        else:
            operation["responses"][str(e.status)] = {"description": "Done"}
        by_status: dict[int, list[str]] = {}
        for code in e.error_codes():
            by_status.setdefault(STATUS_BY_CODE[code], []).append(code.value)
        for status, codes in sorted(by_status.items()):
            operation["responses"][str(status)] = {
                "description": "error code: " + ", ".join(codes),
                "content": {"application/json": {"schema": error_ref}},
            }
            if status == STATUS_BY_CODE[ErrorCode.RATE_LIMITED]:
                operation["responses"][str(status)]["headers"] = {"Retry-After": {
                    "description": "Seconds until the budget allows this request again.",
                    "required": True, "schema": {"type": "integer", "minimum": 1}}}
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    info = {"title": title, "version": version}
    if description:
        info["description"] = description
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
