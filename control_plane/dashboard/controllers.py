"""``GET /``: the dashboard page, and its script and style under ``/dashboard/``.

No build step and nothing from elsewhere: the page, its script and its style
are files in ``static/``. The Content-Security-Policy lets the page load only
its own files and talk only to this origin (REST and ``/ws``), so injected
markup could run nothing even if the script's escaping ever failed.
"""

import re
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

STATIC = Path(__file__).parent / "static"
PAGE = (STATIC / "index.html").read_bytes()
# The page's own files, read once: nothing else under /dashboard is served.
ASSETS = {
    name: ((STATIC / name).read_bytes(), media_type)
    for name, media_type in (
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    )
}
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _host(header: str) -> str:
    """The Host header, if it is a plain host[:port]: it goes into a header of our own."""
    return header if _HOST.fullmatch(header) else "localhost"


def _policy(host: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' ws://{host} wss://{host}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@get("/", include_in_schema=False, media_type=MediaType.HTML)
async def page(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        PAGE,
        media_type=MediaType.HTML,
        headers={
            "Content-Security-Policy": _policy(_host(request.headers.get("host", ""))),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


@get("/dashboard/{name:str}", include_in_schema=False)
async def asset(name: FromPath[str]) -> Response[bytes]:
    if name not in ASSETS:
        raise NotFoundException()
    content, media_type = ASSETS[name]
    return Response(content, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})


handlers = [page, asset]
