"""Read-only pages: the skill bank, policy statistics, the memory lifecycle and the evaluation reports."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.admin import reports
from api.admin.guards import AdminError, SessionDep, reports_dir, settings_of
from api.admin.render import SECURITY_HEADERS, render
from api.admin.session import AdminSession
from api.deps import MemoryOSDep

router = APIRouter()


@router.get("/skills")
def skills(request: Request, session: SessionDep, os_: MemoryOSDep) -> Response:
    """The same cards and statistics as `GET /v1/skills`, for the session's tenant."""
    return render(request, "skills.html", {"report": os_.skills_report(session.tenant)}, session=session, section="skills")


@router.get("/policies")
def policies(request: Request, session: SessionDep, os_: MemoryOSDep) -> Response:
    """The same statistics as `GET /v1/policies`, for the session's tenant."""
    return render(request, "policies.html", {"p": os_.policies(session.tenant)}, session=session, section="policies")


@router.get("/lifecycle")
def lifecycle(request: Request, session: SessionDep, os_: MemoryOSDep) -> Response:
    """The tenant's memories per lifecycle status, its episodes waiting for a digest, and its jobs:
    counts per kind and state, and the latest runs with the reason of each failure."""
    return render(request, "lifecycle.html", {"s": os_.lifecycle_stats(session.tenant)}, session=session,
                  section="lifecycle")


@router.get("/reports")
def reports_index(request: Request, session: SessionDep) -> Response:
    """The newest run (at its own URL, so the report's relative image links resolve)."""
    root = reports_dir(settings_of(request))
    runs = reports.list_runs(root)
    if runs:
        return RedirectResponse(f"/admin/reports/{reports.quote(runs[0].name)}/", status_code=303)
    return _report_page(request, session, root, runs, None)


@router.get("/reports/{run}")
def report_no_slash(run: str) -> Response:
    # Images in report.md are relative to the run folder: keep the trailing slash.
    return RedirectResponse(f"/admin/reports/{reports.quote(run)}/", status_code=308)


@router.get("/reports/{run}/")
def report_page(request: Request, run: str, session: SessionDep) -> Response:
    root = reports_dir(settings_of(request))
    found = reports.find_run(root, run)
    if found is None:
        raise AdminError(404, "No such evaluation run.")
    return _report_page(request, session, root, reports.list_runs(root), found)


def _report_page(request: Request, session: AdminSession, root: Path, runs: list[reports.Run],
                 run: reports.Run | None) -> Response:
    return render(request, "reports.html", {
        "root": root, "runs": runs, "run": run,
        "report": reports.report_html(run) if run else None,
        "summary": reports.results_summary(run) if run else {},
    }, session=session, section="reports")


@router.get("/reports/{run}/{name}")
def report_file(request: Request, run: str, name: str, session: SessionDep) -> Response:
    found = reports.find_run(reports_dir(settings_of(request)), run)
    path = reports.run_file(found, name) if found else None
    if path is None or not name.endswith((".png", ".json", ".md")):
        raise AdminError(404, "No such report file.")
    media = {"png": "image/png", "json": "application/json", "md": "text/plain; charset=utf-8"}[name.rsplit(".", 1)[1]]
    return FileResponse(path, media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=60"})
