"""The web chat page's files (`server/ui/`), served at /ui with headers that keep it contained.

The page needs nothing from anywhere but this server, so its Content-Security-Policy allows
only same-origin scripts, styles and requests and no inline script at all: even if some text
were ever turned into markup by mistake, an injected `onerror=` or `<script>` would not run.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parents[1] / "ui"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated by ETag, so a server upgrade shows at once
}


class UIFiles(StaticFiles):
    """Static files with the page's security and caching headers on every answer."""

    def __init__(self) -> None:
        super().__init__(directory=UI_DIR, html=True)

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response
