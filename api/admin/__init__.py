"""The operator UI: `install(app)` adds the /admin pages and their error handling to the app."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api.admin.guards import AdminError, LoginRequired, get_sessions
from api.admin.render import render
from api.admin.routes import router
from api.admin.session import COOKIE

__all__ = ["install", "router"]


def install(app: FastAPI) -> None:
    """Include the router (static files are served by it) and render its errors as pages."""
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if request.url.path.endswith(".json"):
            return JSONResponse({"error": {"code": "unauthenticated", "message": "admin session required"}},
                                status_code=401)
        if request.headers.get("hx-request"):  # htmx follows this header with a full page load
            return Response(status_code=401, headers={"HX-Redirect": "/admin/login"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = "/admin/login" if request.method != "GET" else "/admin/login?" + urlencode({"next": target})
        return RedirectResponse(login, status_code=303)

    @app.exception_handler(AdminError)
    async def _error(request: Request, exc: AdminError) -> Response:
        session = None
        try:
            session = get_sessions(request).verify(request.cookies.get(COOKIE), request.app.state.memory_os.records)
        except Exception:  # the error page must render even when the session store cannot be read
            session = None
        return render(request, "error.html", {"status": exc.status, "message": exc.message},
                      session=session, status=exc.status)
