"""The migration console: `GET /migration` for a browser. The report's data (the same dict as the JSON)
rendered as one self-contained page: its HTML, script and style are package data (shim/web/static/),
served from the shim's own paths (`CONSOLE_ASSETS`), under a Content-Security-Policy that lets the page
load nothing from anywhere else. The script renders every value with `textContent`, never as markup.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from shim.translate.url_space import CONSOLE_ASSETS

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Vary": "Accept",
}
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
DATA_MARKER = "{{REPORT}}"


@cache
def _package_file(name: str) -> bytes:
    return (resources.files("shim.web") / "static" / name).read_bytes()


def wants_html(accept: str | None) -> bool:
    """A browser's Accept (`text/html` ranked above JSON); curl's `*/*`, a missing header and
    `application/json` get the JSON, as before the console."""
    html = json_rank = 0.0
    for part in (accept or "").split(","):
        media, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            html = max(html, quality)
        elif media in ("application/json", "*/*", "application/*"):
            json_rank = max(json_rank, quality)
    return html > 0 and html >= json_rank


def page(report: dict[str, Any]) -> web.Response:
    """The console's page with the report embedded as data (a JSON block the script reads; `<` escaped,
    so no value can close it), so the first view needs no second request."""
    data = json.dumps(report, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    data = data.replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    body = _package_file("console.html").decode().replace(DATA_MARKER, data)
    return web.Response(body=body.encode(), content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


async def console_asset(request: web.Request) -> web.Response:
    """GET /migration/assets/NAME: one of the console's files (a fixed list: no path is read from the URL)."""
    resource = request.match_info.route.resource
    name = CONSOLE_ASSETS[resource.canonical if resource is not None else request.path]
    suffix = name[name.rindex("."):]
    return web.Response(body=_package_file(name), headers={
        **PAGE_HEADERS, "Content-Type": CONTENT_TYPES[suffix], "Cache-Control": "no-cache"})
