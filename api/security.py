"""Response headers for a service on the internet: content security policy, no framing, no
sniffing, no referrer, camera and microphone for our own origin only, no caching of API
responses (they carry session tokens and personal data), HSTS behind https, CORS only for the
configured origins, and a Server header that names no framework or version.

The web client has no inline script or style, so the policy needs no 'unsafe-inline'. Media
sockets (`/sfu/ws`) and the signaling socket are same-origin; selfies may come from the S3
endpoint (presigned URLs) when one is configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

SERVER = "napalmsky"
CORS_MAX_AGE = "600"
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type, X-Request-Id"


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def content_security_policy(image_origins: Sequence[str] = ()) -> str:
    """The policy every response carries (W3C CSP Level 3). `image_origins`: where blobs are
    served from besides this origin (an S3 endpoint): selfies, posters and intro videos."""
    images = " ".join(["'self'", "data:", "blob:", *image_origins])
    media = " ".join(["'self'", "blob:", *image_origins])
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src {images}",
        f"media-src {media}",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(*, public_url: str, cors_origins: Sequence[str] = (),
                     image_url: str | None = None
                     ) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An `on_response_prepare` hook setting the headers on every response, errors and
    WebSocket upgrades included."""
    image_origin = _origin(image_url)
    csp = content_security_policy([image_origin] if image_origin else [])
    https = public_url.lower().startswith("https://")
    allowed = frozenset(o.lower() for o in cors_origins)

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Server"] = SERVER
        headers.setdefault("Content-Security-Policy", csp)
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Permissions-Policy"] = (
            "camera=(self), microphone=(self), geolocation=(), payment=(), usb=(), "
            "display-capture=()"
        )
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if https:
            headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if request.path.startswith("/api/"):
            headers["Cache-Control"] = "no-store"
        origin = request.headers.get(hdrs.ORIGIN, "").lower()
        if origin and origin in allowed and request.path.startswith("/api/"):
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
            headers.add("Vary", "Origin")

    return prepare


def cors_preflight(cors_origins: Sequence[str]) -> Middleware:
    """A middleware answering CORS preflight requests (OPTIONS) for the configured origins;
    from any other origin a preflight gets 403 and the browser refuses the call."""
    allowed = frozenset(o.lower() for o in cors_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method == hdrs.METH_OPTIONS and request.path.startswith("/api/")
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            origin = request.headers.get(hdrs.ORIGIN, "").lower()
            if origin not in allowed:
                raise web.HTTPForbidden(reason="origin not allowed")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": _CORS_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE,
            })
        return await handler(request)

    return middleware
