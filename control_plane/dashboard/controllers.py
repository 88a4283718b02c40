"""``GET /``: the dashboard page, and its script and style under ``/dashboard``.

No build step and nothing from elsewhere: the page, its script and its style
are files in ``static/``. The Content-Security-Policy lets the page load only
its own files and talk only to this origin (REST and ``/ws``), so injected
markup could run nothing even if the script's escaping ever failed.
"""

import re
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"
PAGE = (STATIC / "index.html").read_bytes()
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


handlers = [page, create_static_files_router("/dashboard", directories=[STATIC], name="dashboard")]
