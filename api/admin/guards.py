"""Who may see and who may change: session, CSRF and read-only checks as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from api.admin.session import COOKIE, AdminSession, SessionManager, load_secret
from api.deps import MemoryOSDep
from memsvc.config import Settings
from memsvc.errors import MemsvcError

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """No valid session: browsers are sent to the login page."""


class AdminError(Exception):
    """An error shown to the operator as an HTML page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def shown_as_page() -> Iterator[None]:
    """Domain errors (not found, invalid input, conflict) become admin error pages."""
    try:
        yield
    except MemsvcError as exc:
        raise AdminError(exc.status, exc.message) from exc


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def reports_dir(settings: Settings) -> Path:
    if settings.admin.reports_dir is not None:
        return settings.admin.reports_dir
    candidates = [settings.data_dir.resolve().parent / "eval-out", Path("eval-out").resolve()]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def get_sessions(request: Request) -> SessionManager:
    """One manager per app, built on first use from `settings.admin`."""
    manager: SessionManager | None = getattr(request.app.state, "admin_sessions", None)
    if manager is None:
        settings = settings_of(request)
        cfg = settings.admin
        secret = cfg.secret.encode() if cfg.secret else load_secret(settings.data_dir / "admin_secret")
        manager = SessionManager(secret, cfg.session_ttl_s)
        request.app.state.admin_sessions = manager
    return manager


SessionsDep = Annotated[SessionManager, Depends(get_sessions)]


def current_session(request: Request, os_: MemoryOSDep, sessions: SessionsDep) -> AdminSession:
    session = sessions.verify(request.cookies.get(COOKIE), os_.records)
    if session is None:
        raise LoginRequired
    return session


SessionDep = Annotated[AdminSession, Depends(current_session)]


def check_origin(request: Request) -> None:
    """A cross-site POST is refused even before the CSRF token is looked at."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if (parts.scheme, parts.netloc) != (request.url.scheme, request.url.netloc):
            raise AdminError(403, "Cross-site request refused.")


async def writer_session(request: Request, session: SessionDep, sessions: SessionsDep) -> AdminSession:
    """A session that may change data: not read-only, same origin, with the session's CSRF token."""
    if session.read_only:
        raise AdminError(403, "This admin key is read-only: it can look but not change.")
    check_origin(request)
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not sessions.check_csrf(session, token):
        raise AdminError(403, "The form's CSRF token is missing or wrong; reload the page and try again.")
    return session


WriterDep = Annotated[AdminSession, Depends(writer_session)]


def safe_next(target: str | None) -> str:
    """Only a local admin path may follow a login (no open redirect)."""
    if not target or not (target == "/admin" or target.startswith("/admin/")):
        return "/admin"
    if "//" in target or "\\" in target or any(ord(c) < 32 for c in target):
        return "/admin"
    return target
