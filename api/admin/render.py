"""Jinja2 (autoescape on) and the headers every admin page carries; static files by name."""

from __future__ import annotations

import hashlib
import json
import mimetypes
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from api.admin.session import AdminSession
from memsvc.models import as_utc

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

# No inline script or style anywhere: the policy allows only files served by memsvc itself.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _static_files() -> dict[str, tuple[Path, str]]:
    """name -> (path, short content hash) for cache busting; only these names are served."""
    files = {}
    for p in sorted(STATIC_DIR.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            files[p.name] = (p, hashlib.sha256(p.read_bytes()).hexdigest()[:10])
    return files


STATIC = _static_files()


def static_url(name: str) -> str:
    return f"/admin/static/{name}?v={STATIC[name][1]}"


def static_response(name: str) -> Response:
    path, _ = STATIC[name]
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=media, headers={
        "Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


def fmt_dt(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    dt = as_utc(value)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "—"


def iso(value: datetime | None) -> str:
    dt = as_utc(value)
    return dt.isoformat() if dt else ""


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def pathq(value: Any) -> str:
    """One path segment, every reserved character quoted (user ids may hold `?`, `#`, `%`)."""
    return quote(str(value), safe="")


def qs(params: dict[str, Any], **extra: Any) -> str:
    """A query string from the non-empty values (lists repeat the key); `extra` overrides."""
    pairs = [(k, v) for k, vs in {**params, **extra}.items() for v in (vs if isinstance(vs, list) else [vs])
             if v not in (None, "")]
    return "?" + urlencode(pairs) if pairs else ""


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


env = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)
env.filters.update(dt=fmt_dt, iso=iso, bytes=fmt_bytes, pathq=pathq, pretty=pretty_json)
env.globals.update(static_url=static_url, qs=qs)

# htmx settings (read from a meta tag, so no inline script): no indicator <style> (blocked by
# the CSP), no eval, no page snapshots (memory text) in localStorage, and 4xx bodies are swapped
# in so validation messages show where the results would have been.
HTMX_CONFIG = json.dumps({
    "includeIndicatorStyles": False, "allowEval": False, "historyCacheSize": 0,
    "refreshOnHistoryMiss": True, "selfRequestsOnly": True,
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "4..", "swap": True, "error": True},
        {"code": "...", "swap": False, "error": True},
    ],
})


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, *,
    session: AdminSession | None = None, status: int = 200, section: str = "",
) -> HTMLResponse:
    ctx = {
        "request": request, "session": session, "section": section, "htmx_config": HTMX_CONFIG,
        "can_write": session is not None and not session.read_only,
        "csrf": session.csrf if session else "", **(context or {}),
    }
    html = env.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
