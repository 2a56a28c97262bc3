"""The web workspace: one HTML page plus its script and stylesheet, served by the API itself.

No build step and no CDN: the files ship inside the package (``perimeter/api/static``) and the
page's Content-Security-Policy forbids loading anything from anywhere but this server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from perimeter.api.errors import APIError

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# An allow-list rather than a directory mount: nothing but these files can ever be served, so
# no path can reach outside the folder.
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

_SECURITY_HEADERS = {
    # Same-origin only: the workspace must work (and leak nothing) on an air-gapped network.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
def workspace() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache", **_SECURITY_HEADERS},
    )


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise APIError(404, "not_found", f"no static file {name!r}")
    # no-cache still lets the browser reuse its copy after a cheap ETag revalidation, and an
    # upgraded server never runs with a stale script.
    return FileResponse(
        STATIC_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
