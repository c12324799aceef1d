"""Health, readiness, metrics, skills and policies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import MemoryOSDep, PrincipalDep
from api.errors import AUTHED, error_responses
from memsvc.ports import VectorFilter

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={
    200: {"description": "`ready`, or `degraded` when outbox entries are dead letters (served, but some changes "
                         "never reached the vector index or the graph; `outbox` has the counts)"},
    503: {"description": "a backend is not ready (same body, `status: not_ready`)"}})
def readyz(os_: MemoryOSDep) -> Any:
    checks: dict[str, str] = {}
    outbox: dict[str, Any] | None = None
    try:
        outbox = os_.outbox.stats()
        checks["records"] = "ok"
    except Exception as exc:  # report, don't raise: this endpoint is for probes
        checks["records"] = f"error: {type(exc).__name__}"
    try:
        os_.vectors.count(VectorFilter(tenant="__readyz__"))
        checks["vectors"] = "ok"
    except Exception as exc:
        checks["vectors"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    status = "not_ready" if not ok else "degraded" if outbox and outbox["dead"] else "ready"
    pending = outbox["pending"] + outbox["retrying"] if outbox else -1
    return JSONResponse({"status": status, "checks": checks, "outbox": outbox, "outbox_pending": pending},
                        status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/skills", tags=["skills"], responses=error_responses(*AUTHED))
def skills(os_: MemoryOSDep, who: PrincipalDep) -> dict[str, Any]:
    """The skill bank: each card with its state (inactive and why), version history and statistics
    (spans selected, memories written, recalls of its memories; the development ablation when the
    learned controller is loaded), and the controller in use."""
    return os_.skills_report(who.tenant)


@router.get("/v1/policies", tags=["policies"], responses=error_responses(*AUTHED))
def policies(os_: MemoryOSDep, who: PrincipalDep) -> dict[str, Any]:
    return os_.policies(who.tenant)
