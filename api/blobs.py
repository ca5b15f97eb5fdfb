"""The route that serves local blobs through the signed URLs the local blob store hands out.

S3 blobs never pass through here: their presigned URLs point at the bucket.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from core.blobs import ServedBlobs
from core.errors import PermissionDenied


def blob_routes(store: ServedBlobs) -> list[web.RouteDef]:
    """`GET` (and `HEAD`) `/blobs/{key}?expires=...&sig=...`.

    Errors are raised as core.errors for the error middleware: a malformed key is
    invalid_argument, a missing, wrong or expired signature permission_denied, a validly signed
    URL for a blob that is gone not_found.
    """

    async def serve_blob(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        expires = request.query.get("expires")
        sig = request.query.get("sig")
        if expires is None or sig is None:
            raise PermissionDenied("missing signature")
        store.verify(key, expires, sig)
        blob = await store.open_for_serving(key)
        max_age = max(0, int(expires) - int(store.clock.time()))
        return web.FileResponse(
            blob.path,
            headers={
                hdrs.CONTENT_TYPE: blob.content_type,
                hdrs.CACHE_CONTROL: f"private, max-age={max_age}",
                hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
                # A blob is data, never a page: no scripts even if one claims to be HTML.
                hdrs.CONTENT_SECURITY_POLICY: "sandbox",
            },
        )

    return [web.get("/blobs/{key:.+}", serve_blob, name="blob")]
