"""The operator UI at /admin: server-rendered pages, plain HTML forms, htmx for partial updates.

Every read and change is scoped by the session's tenant, exactly as the key would be in the API;
changes go through `MemoryOS` with `actor="admin:<key id>"`, so the event log is the audit trail.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.admin import graph as graph_view
from api.admin import pages, views
from api.admin.guards import (
    AdminError,
    SessionDep,
    SessionsDep,
    WriterDep,
    check_origin,
    safe_next,
    settings_of,
    shown_as_page,
)
from api.admin.render import SECURITY_HEADERS, STATIC, pathq, render, static_response
from api.admin.session import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_NONCE_TTL_S,
    AdminSession,
    SessionManager,
    login_key,
)
from api.deps import MemoryOSDep
from memsvc.errors import MemsvcError
from memsvc.memory_os import MemoryOS
from memsvc.models import RESERVED_PREFIX, EventLog, MemoryCube, MemoryStatus, MemoryType
from memsvc.ports import MemoryQuery
from memsvc.schemas import MemoryPatch, SearchRequest

router = APIRouter(prefix="/admin", include_in_schema=False)

AUDIT_KINDS = ["memory.update", "memory.restore", "memory.delete", "user.purge", "outbox.retry"]
VISIBLE = [MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED, MemoryStatus.ARCHIVED]
DONE = {
    "updated": "Memory updated.", "deleted": "Memory deleted. It keeps its history and can be restored.",
    "restored": "Memory restored.", "archived": "Memory archived.", "nothing": "Nothing changed.",
    "purged": "User purged everywhere.",
}
PAGE_SIZES = (10, 25, 50, 100)
RECALL_SCAN = 2000  # recall events read to count how often a memory was returned
TIMELINE_MAX = 2000  # memories drawn on a user's timeline

Text = Annotated[str | None, Form()]


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _memory_url(memory_id: str, done: str) -> str:
    return f"/admin/memories/{pathq(memory_id)}?done={done}"


def _done(done: str | None) -> str | None:
    return DONE.get(done or "")


# -- static files and login -----------------------------------------------------------------

@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise AdminError(404, "No such file.")
    return static_response(name)


@router.get("/login")
def login_page(request: Request, os_: MemoryOSDep, sessions: SessionsDep,
               next_: Annotated[str | None, Query(alias="next")] = None) -> Response:
    if sessions.verify(request.cookies.get(COOKIE), os_.records) is not None:
        return _redirect(safe_next(next_))
    return _login_form(request, sessions, next_, None, 200)


def _login_form(request: Request, sessions: SessionManager, next_: str | None, error: str | None,
                status: int) -> Response:
    nonce = sessions.new_nonce()
    resp = render(request, "login.html", {"error": error, "next": safe_next(next_),
                                          "login_csrf": sessions.login_csrf(nonce)}, status=status)
    resp.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_NONCE_TTL_S, path=COOKIE_PATH, httponly=True,
                    samesite="strict", secure=request.url.scheme == "https")
    return resp


@router.post("/login")
def login(
    request: Request, os_: MemoryOSDep, sessions: SessionsDep,
    key: Text = None, csrf_token: Text = None, next_: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    """The key comes in the form body only; the answer is a session cookie, never the key."""
    check_origin(request)
    if not sessions.check_login_csrf(request.cookies.get(LOGIN_COOKIE), csrf_token):
        return _login_form(request, sessions, next_, "The login form expired; please try again.", 403)
    found = login_key(os_.records, key or "")
    if isinstance(found, str):
        return _login_form(request, sessions, next_, found, 401)
    tenant, key_id, key_hash, read_only = found
    _, cookie = sessions.issue(tenant, key_id, key_hash, read_only)
    resp = _redirect(safe_next(next_))
    resp.set_cookie(COOKIE, cookie, max_age=sessions.ttl_s, path=COOKIE_PATH, httponly=True,
                    samesite="strict", secure=request.url.scheme == "https")
    resp.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return resp


@router.post("/logout")
async def logout(request: Request, session: SessionDep, sessions: SessionsDep, os_: MemoryOSDep) -> Response:
    check_origin(request)
    form = await request.form()
    if not sessions.check_csrf(session, str(form.get("csrf_token") or request.headers.get("x-csrf-token") or "")):
        raise AdminError(403, "The form's CSRF token is missing or wrong; reload the page and try again.")
    sessions.revoke(session, os_.records)
    resp = _redirect("/admin/login")
    resp.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return resp


# -- overview and memory browser ------------------------------------------------------------

@router.get("")
def overview(request: Request, session: SessionDep, os_: MemoryOSDep, done: str | None = None) -> Response:
    stats = os_.records.scope_stats(session.tenant)
    totals = {
        "users": len(stats), "memories": sum(s.total for s in stats), "bytes": sum(s.bytes for s in stats),
        "by_type": {t.value: sum(s.counts.get(t.value, 0) for s in stats) for t in MemoryType},
    }
    recent = os_.records.events(session.tenant, kinds=AUDIT_KINDS, limit=5).items
    return render(request, "overview.html", {"stats": stats, "totals": totals, "recent": recent,
                                             "types": [t.value for t in MemoryType], "done": _done(done)},
                  session=session, section="overview")


@router.get("/memories")
def memories(
    request: Request, session: SessionDep, os_: MemoryOSDep,
    user: str = "", type: str = "", status: str = "", since: str = "", until: str = "",
    q: str = "", mode: str = "keyword", limit: int = 25, cursor: str | None = None,
) -> Response:
    """List with filters (keyword = substring of content) or semantic recall for one user."""
    form = {"user": user.strip(), "type": type, "status": status, "since": since, "until": until,
            "q": q, "mode": mode if mode in ("keyword", "semantic") else "keyword",
            "limit": limit if limit in PAGE_SIZES else 25}
    ctx: dict[str, Any] = {"form": form, "items": [], "next_cursor": None, "error": None, "scores": {},
                           "types": [t.value for t in MemoryType], "statuses": [s.value for s in MemoryStatus],
                           "page_sizes": PAGE_SIZES, "more": bool(cursor)}
    try:
        types = [MemoryType(type)] if type else None
        statuses = None if status == "all" else [MemoryStatus(status)] if status else VISIBLE
        start = views.day_start(views.parse_day(since, "from"))
        end = views.day_start(views.parse_day(until, "to"), next_day=True)
        if form["mode"] == "semantic":
            ctx.update(_semantic(os_, session, form, types, start, end))
        else:
            page = os_.list_memories(session.tenant, MemoryQuery(
                user_id=form["user"] or None, types=types, statuses=statuses, text=q.strip() or None,
                created_from=start, created_to=end, limit=form["limit"], cursor=cursor or None))
            ctx.update(items=page.items, next_cursor=page.next_cursor)
    except (ValueError, ValidationError) as exc:
        ctx["error"] = _first_error(exc)
    except MemsvcError as exc:  # e.g. a bad cursor in the URL: show it, do not fail the page
        ctx["error"] = exc.message
    return render(request, "memories.html", ctx, session=session, section="memories",
                  status=400 if ctx["error"] else 200)


def _semantic(os_: MemoryOS, session: AdminSession, form: dict[str, Any], types: list[MemoryType] | None,
              start: datetime | None, end: datetime | None) -> dict[str, Any]:
    if not form["user"]:
        raise ValueError("Semantic search needs a user id: recall is always within one user's memories.")
    if not form["q"].strip():
        raise ValueError("Semantic search needs a query.")
    req = SearchRequest(user_id=form["user"], query=form["q"], top_k=form["limit"], types=types, explain=True)
    results = os_.search(session.tenant, req, actor=session.actor, record=False).results
    ranked = sorted(results, key=lambda r: r["rank"])
    cubes = {c.id: c for c in os_.records.get_memories(session.tenant, [r["id"] for r in ranked])}
    items = [cubes[r["id"]] for r in ranked if r["id"] in cubes
             and (start is None or cubes[r["id"]].created_at >= start) and (end is None or cubes[r["id"]].created_at < end)]
    return {"items": items, "scores": {r["id"]: r for r in ranked}}


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}".lstrip(": ")
    return str(exc)


# -- one memory -----------------------------------------------------------------------------

@router.get("/memories/{memory_id}")
def memory_detail(request: Request, memory_id: str, session: SessionDep, os_: MemoryOSDep,
                  done: str | None = None) -> Response:
    with shown_as_page():
        cube = os_.get(session.tenant, memory_id)
        versions = os_.history(session.tenant, memory_id)
    messages = os_.records.get_messages(session.tenant, cube.user_id, cube.source_ids)
    found = {m.id for m in messages}
    entities = os_.graph.entities_of(session.tenant, [cube.id]).get(cube.id, []) if os_.graph else []
    events, complete = _recall_events(os_, session.tenant, cube.user_id)
    superseded_by = os_.records.get_memory(session.tenant, cube.superseded_by) if cube.superseded_by else None
    return render(request, "memory.html", {
        "m": cube, "messages": messages, "missing": [i for i in cube.source_ids if i not in found],
        "versions": views.version_views(versions), "entities": entities, "done": _done(done),
        "recalls": views.recall_stats(cube.id, events, complete), "superseded_by": superseded_by,
    }, session=session, section="memories")


def _recall_events(os_: MemoryOS, tenant: str, user_id: str) -> tuple[list[EventLog], bool]:
    """The user's newest recall events, up to RECALL_SCAN; True when that is all of them."""
    events: list[EventLog] = []
    cursor: str | None = None
    while True:
        page = os_.records.events(tenant, user_id=user_id, kinds=["recall"], limit=500, cursor=cursor)
        events.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or len(events) >= RECALL_SCAN:
            return events, cursor is None


@router.get("/memories/{memory_id}/edit")
def edit_page(request: Request, memory_id: str, session: SessionDep, os_: MemoryOSDep) -> Response:
    with shown_as_page():
        cube = os_.get(session.tenant, memory_id)
    return _edit_form(request, session, cube, None, {}, 200)


def _edit_form(request: Request, session: AdminSession, cube: MemoryCube, error: str | None,
               values: dict[str, Any], status: int) -> Response:
    current = {
        "content": cube.content, "type": cube.type.value, "importance": f"{cube.importance:g}",
        "event_time": views.local_input(cube.event_time), "valid_from": views.local_input(cube.valid_from),
        "valid_to": views.local_input(cube.valid_to), "metadata": json.dumps(_client_keys(cube), indent=2, sort_keys=True),
    }
    return render(request, "edit.html", {"m": cube, "v": {**current, **values}, "error": error,
                                         "types": [t.value for t in MemoryType]},
                  session=session, section="memories", status=status)


def _client_keys(cube: MemoryCube) -> dict[str, Any]:
    return {k: v for k, v in cube.metadata.items() if not k.startswith(RESERVED_PREFIX)}


@router.post("/memories/{memory_id}/edit")
def edit(
    request: Request, memory_id: str, session: WriterDep, os_: MemoryOSDep,
    content: Text = None, type: Text = None, importance: Text = None, event_time: Text = None,
    valid_from: Text = None, valid_to: Text = None, metadata: Text = None,
) -> Response:
    """Send only what the operator changed, so the version history shows exactly that."""
    with shown_as_page():
        cube = os_.get(session.tenant, memory_id)
    submitted = {"content": content, "type": type, "importance": importance, "event_time": event_time,
                 "valid_from": valid_from, "valid_to": valid_to, "metadata": metadata}
    values = {k: v for k, v in submitted.items() if v is not None}
    try:
        changes: dict[str, Any] = {}
        if content is not None and content.replace("\r\n", "\n") != cube.content:
            changes["content"] = content.replace("\r\n", "\n")
        if type is not None and type != cube.type.value:
            changes["type"] = type
        if importance is not None and importance.strip() and float(importance) != cube.importance:
            changes["importance"] = float(importance)
        for name in ("event_time", "valid_from", "valid_to"):
            raw = submitted[name]
            if raw is not None and raw.strip() != views.local_input(getattr(cube, name)):
                changes[name] = views.parse_moment(raw, name)
        if metadata is not None:
            parsed = json.loads(metadata) if metadata.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("metadata: expected a JSON object")
            if parsed != _client_keys(cube):  # the server's `_` keys are not editable and stay
                changes["metadata"] = parsed
        if not changes:
            return _redirect(_memory_url(memory_id, "nothing"))
        patch = MemoryPatch.model_validate(changes)
        os_.update(session.tenant, memory_id, patch, actor=session.actor)
    except (ValueError, ValidationError) as exc:
        return _edit_form(request, session, cube, _first_error(exc), values, 422)
    except MemsvcError as exc:
        return _edit_form(request, session, cube, exc.message, values, exc.status)
    return _redirect(_memory_url(memory_id, "updated"))


@router.post("/memories/{memory_id}/delete")
def delete(memory_id: str, session: WriterDep, os_: MemoryOSDep) -> Response:
    with shown_as_page():
        os_.delete(session.tenant, memory_id, actor=session.actor)
    return _redirect(_memory_url(memory_id, "deleted"))


@router.post("/memories/{memory_id}/restore")
def restore(memory_id: str, session: WriterDep, os_: MemoryOSDep) -> Response:
    with shown_as_page():
        cube = os_.get(session.tenant, memory_id)
        if cube.status is MemoryStatus.ACTIVE:
            return _redirect(_memory_url(memory_id, "nothing"))
        os_.update(session.tenant, memory_id, MemoryPatch(status=MemoryStatus.ACTIVE), actor=session.actor)
    return _redirect(_memory_url(memory_id, "restored"))


@router.post("/memories/{memory_id}/archive")
def archive(memory_id: str, session: WriterDep, os_: MemoryOSDep) -> Response:
    with shown_as_page():
        os_.update(session.tenant, memory_id, MemoryPatch(status=MemoryStatus.ARCHIVED), actor=session.actor)
    return _redirect(_memory_url(memory_id, "archived"))


# -- audit log ------------------------------------------------------------------------------

@router.get("/audit")
def audit(request: Request, session: SessionDep, os_: MemoryOSDep,
          user: str = "", cursor: str | None = None) -> Response:
    with shown_as_page():
        page = os_.records.events(session.tenant, user_id=user.strip() or None, kinds=AUDIT_KINDS,
                                  limit=50, cursor=cursor or None)
    ids = [str(e.payload["memory_id"]) for e in page.items if e.payload.get("memory_id")]
    memories_by_id = {c.id: c for c in os_.records.get_memories(session.tenant, ids)}
    return render(request, "audit.html", {"events": page.items, "next_cursor": page.next_cursor,
                                          "user": user.strip(), "memories": memories_by_id},
                  session=session, section="audit")


# -- outbox dead letters ---------------------------------------------------------------------

DEAD_SHOWN = 200


@router.get("/outbox")
def outbox(request: Request, session: SessionDep, os_: MemoryOSDep, retried: str = "") -> Response:
    """The tenant's dead letters: changes committed in SQL that never reached the vector index or the
    graph after every retry (`/readyz` says `degraded` while any exist), with a retry button."""
    with shown_as_page():
        dead = os_.outbox.dead(session.tenant, DEAD_SHOWN)
    done = f"{retried} dead letter{'' if retried == '1' else 's'} queued for a retry." if retried.isdigit() else None
    return render(request, "outbox.html", {"dead": dead, "shown_max": DEAD_SHOWN, "done": done},
                  session=session, section="outbox")


@router.post("/outbox/retry")
def outbox_retry(session: WriterDep, os_: MemoryOSDep, entry: Annotated[list[str] | None, Form()] = None) -> Response:
    """Retry the chosen dead letters (`entry`, repeated), or all of the tenant's when none is given."""
    try:
        ids = [int(e) for e in entry] if entry else None
    except ValueError:
        raise AdminError(400, "Dead letters are named by their numeric ids.") from None
    with shown_as_page():
        n = os_.retry_dead_letters(session.tenant, ids, actor=session.actor)
    return _redirect(f"/admin/outbox?retried={n}")


# -- a user: timeline, graph, purge ---------------------------------------------------------

def _user_memories(os_: MemoryOS, tenant: str, user_id: str) -> list[MemoryCube]:
    out: list[MemoryCube] = []
    cursor = None
    while len(out) < TIMELINE_MAX:
        page = os_.list_memories(tenant, MemoryQuery(user_id=user_id, statuses=VISIBLE, limit=500, cursor=cursor))
        out.extend(page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    return out[:TIMELINE_MAX]


@router.get("/users/{user_id}")
def user_page(request: Request, user_id: str, session: SessionDep, os_: MemoryOSDep) -> Response:
    stats = next((s for s in os_.records.scope_stats(session.tenant) if s.user_id == user_id), None)
    if stats is None:
        raise AdminError(404, f"No memories for user {user_id!r} in this tenant.")
    cubes = _user_memories(os_, session.tenant, user_id)
    return render(request, "user.html", {
        "user_id": user_id, "stats": stats, "timeline": views.timeline(cubes), "shown": len(cubes),
        "capped": len(cubes) >= TIMELINE_MAX, "types": views.TYPES, "when": views.when,
    }, session=session, section="overview")


@router.post("/users/{user_id}/purge")
def purge(user_id: str, session: WriterDep, os_: MemoryOSDep, confirm: Text = None) -> Response:
    if (confirm or "").strip() != user_id:
        raise AdminError(400, "To purge a user, type the user id exactly into the confirmation field.")
    with shown_as_page():
        os_.purge_user(session.tenant, user_id, actor=session.actor)
    return _redirect("/admin?done=purged")


@router.get("/users/{user_id}/graph")
def graph_page(request: Request, user_id: str, session: SessionDep, focus: str = "") -> Response:
    cap = settings_of(request).admin.graph_max_nodes
    return render(request, "graph.html", {"user_id": user_id, "cap": cap, "focus": focus},
                  session=session, section="overview")


@router.get("/users/{user_id}/graph.json")
def graph_json(request: Request, user_id: str, session: SessionDep, os_: MemoryOSDep,
               limit: Annotated[int | None, Query(ge=1)] = None) -> Response:
    cap = settings_of(request).admin.graph_max_nodes
    payload = graph_view.graph_payload(os_.graph, session.tenant, user_id, min(limit or cap, cap))
    return JSONResponse(payload, headers=SECURITY_HEADERS)


@router.get("/users/{user_id}/entities/{entity_id}")
def entity_panel(request: Request, user_id: str, entity_id: str, session: SessionDep, os_: MemoryOSDep) -> Response:
    found = graph_view.entity_detail(os_.graph, os_.records, session.tenant, user_id, entity_id)
    if found is None:
        raise AdminError(404, "No such entity for this user.")
    entity, relations, cubes, names = found
    return render(request, "_entity.html", {"user_id": user_id, "e": entity, "relations": relations,
                                            "cubes": cubes, "names": names}, session=session)


# Skills, policies and evaluation reports (read-only pages) live in pages.py.
router.include_router(pages.router)
