"""The admin UI in-process (httpx ASGITransport, a real MemoryOS): login, pages, changes, security."""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api.admin import reports as reports_mod
from api.admin import views
from api.admin.guards import safe_next
from api.admin.render import STATIC, env
from api.admin.session import COOKIE, SessionManager
from api.app import create_app
from api.auth import authenticate, create_key, hash_key
from memsvc.memory_os import MemoryOS
from memsvc.models import SLOT_KEY, MemoryCube, MemoryStatus, MemoryType, OutboxEntry, OutboxOp
from memsvc.schemas import WriteRequest
from tests.admin.conftest import BASE, Login, admin_settings, csrf_of, page_csrf

pytestmark = pytest.mark.anyio

TEMPLATES = Path(__file__).resolve().parents[2] / "api" / "admin" / "templates"


def audit_events(os_: MemoryOS, tenant: str = "tenant-a") -> list[tuple[str, str | None, str | None]]:
    kinds = ["memory.update", "memory.restore", "memory.delete", "user.purge"]
    return [(e.kind, e.actor, e.payload.get("memory_id")) for e in os_.records.events(tenant, kinds=kinds).items]


# -- login, sessions, logout ----------------------------------------------------------------

async def test_login_sets_a_strict_httponly_session_cookie(login: Login, keys: dict[str, str], seeded: dict[str, str]) -> None:
    c = await login()
    page = await c.get("/admin/login")
    assert page.status_code == 200 and 'method="post" action="/admin/login"' in page.text
    r = await c.post("/admin/login", data={"key": keys["a_admin"], "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attrs and "secure" not in attrs  # http: no Secure
    assert "samesite=strict" in cookie.lower() and "path=/admin" in cookie.lower()
    assert keys["a_admin"] not in cookie and keys["a_admin"] not in r.headers["location"]
    overview = await c.get("/admin")
    assert overview.status_code == 200 and "tenant-a" in overview.text


async def test_the_session_cookie_is_secure_over_https(memory_os: MemoryOS, keys: dict[str, str], reports: Path) -> None:
    app = create_app(admin_settings(memory_os, reports), memory_os=memory_os)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://admin.test") as c:
        page = await c.get("/admin/login")
        r = await c.post("/admin/login", data={"key": keys["a_admin"], "csrf_token": csrf_of(page.text)})
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))
        assert r.status_code == 303 and "; secure" in cookie.lower()


async def test_login_is_refused_for_bad_non_admin_and_forged_requests(login: Login, keys: dict[str, str]) -> None:
    for key, status, message in [("msk_nope", 401, "not valid"), (keys["a"], 401, "not an admin key"),
                                 (keys["a_ro"], 401, "not an admin key")]:
        c = await login()
        page = await c.get("/admin/login")
        r = await c.post("/admin/login", data={"key": key, "csrf_token": csrf_of(page.text)})
        assert r.status_code == status and message in r.text
        assert COOKIE not in c.cookies
    c = await login()
    r = await c.post("/admin/login", data={"key": keys["a_admin"], "csrf_token": "forged"})
    assert r.status_code == 403 and COOKIE not in c.cookies
    page = await c.get("/admin/login")
    r = await c.post("/admin/login", data={"key": keys["a_admin"], "csrf_token": csrf_of(page.text)},
                     headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and COOKIE not in c.cookies


async def test_pages_need_a_session(login: Login) -> None:
    c = await login()
    r = await c.get("/admin/memories?user=alice")
    assert r.status_code == 303 and r.headers["location"] == "/admin/login?next=%2Fadmin%2Fmemories%3Fuser%3Dalice"
    r = await c.get("/admin/memories", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/admin/login"
    r = await c.get("/admin/users/alice/graph.json")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    c.cookies.set(COOKIE, "v1.eyJzaWQiOiJ4In0.forged", domain="admin.test", path="/admin")
    assert (await c.get("/admin")).status_code == 303


async def test_login_redirects_only_to_admin_paths() -> None:
    assert safe_next("/admin/memories?q=x") == "/admin/memories?q=x"
    for bad in ("https://evil.example", "//evil.example", "/admin//evil", "/v1/memories", "/admin\\x", None):
        assert safe_next(bad) == "/admin"


async def test_logout_revokes_the_session(login: Login, keys: dict[str, str]) -> None:
    c = await login(keys["a_admin"])
    stolen = c.cookies[COOKIE]
    r = await c.post("/admin/logout", data={"csrf_token": await page_csrf(c)})
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    assert COOKIE not in c.cookies
    thief = await login()
    thief.cookies.set(COOKIE, stolen, domain="admin.test", path="/admin")
    assert (await thief.get("/admin")).status_code == 303


async def test_sessions_survive_a_restart_and_the_secret_is_private(
    login: Login, keys: dict[str, str], memory_os: MemoryOS, reports: Path,
) -> None:
    c = await login(keys["a_admin"])
    secret = memory_os.settings.data_dir / "admin_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    fresh = create_app(admin_settings(memory_os, reports), memory_os=memory_os)  # a new process, same data dir
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh), base_url=BASE,
                                 cookies={COOKIE: c.cookies[COOKIE]}) as again:
        assert (await again.get("/admin")).status_code == 200


async def test_a_session_of_another_secret_or_an_expired_one_is_refused(memory_os: MemoryOS, keys: dict[str, str]) -> None:
    mine, other = SessionManager(b"a" * 64, 3600), SessionManager(b"b" * 64, 3600)
    p = authenticate(memory_os.records, keys["a_admin"])
    assert p is not None
    _, cookie = mine.issue(p.tenant, p.key_id, hash_key(keys["a_admin"]), False)
    assert mine.verify(cookie, memory_os.records) is not None
    assert other.verify(cookie, memory_os.records) is None
    assert SessionManager(b"a" * 64, -1).verify(SessionManager(b"a" * 64, -1).issue(
        p.tenant, p.key_id, hash_key(keys["a_admin"]), False)[1], memory_os.records) is None
    body, _, sig = cookie.rpartition(".")
    assert mine.verify(body.replace("v1.", "v1.x") + "." + sig, memory_os.records) is None


# -- pages ----------------------------------------------------------------------------------

async def test_every_page_renders_with_security_headers(login: Login, keys: dict[str, str], seeded: dict[str, str]) -> None:
    c = await login(keys["a_admin"])
    pages = ["/admin", "/admin/memories", "/admin/memories?user=alice&type=semantic&status=all&since=2020-01-01",
             f"/admin/memories/{seeded['berlin']}", f"/admin/memories/{seeded['berlin']}/edit", "/admin/audit",
             "/admin/users/alice", "/admin/users/alice/graph", "/admin/skills", "/admin/policies", "/admin/outbox",
             "/admin/lifecycle"]
    for path in pages:
        r = await c.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
    r = await c.get("/admin/memories/does-not-exist")
    assert r.status_code == 404 and "Not found" in r.text


async def test_overview_counts_per_type_and_storage(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                                    memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    html = (await c.get("/admin")).text
    stats = {s.user_id: s for s in memory_os.records.scope_stats("tenant-a")}
    assert set(stats) == {"alice", "bob"}
    row = re.search(r'<a href="/admin/users/alice">alice</a></td>(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    alice = stats["alice"]
    assert cells == [str(alice.counts[t.value]) for t in MemoryType] + [str(alice.total), f"{alice.bytes} B"]
    assert "vault code" not in html and "tenant-b" not in html


async def test_detail_shows_provenance_history_entities_and_recalls(
    login: Login, keys: dict[str, str], seeded: dict[str, str], memory_os: MemoryOS,
) -> None:
    c = await login(keys["a_admin"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(memory_os=memory_os)), base_url=BASE,
                                 headers={"Authorization": f"Bearer {keys['a']}"}) as api:
        r = await api.post("/v1/memories/search", json={"user_id": "alice", "query": "Where does Alice live?"})
        assert seeded["berlin"] in [x["id"] for x in r.json()["results"]]
    memory_os.recall_log.flush()  # recall logs are written in batches, within half a second
    html = (await c.get(f"/admin/memories/{seeded['berlin']}")).text
    assert "I moved to Berlin in May 2023." in html  # the source message, with its id
    assert '<td class="mono small">m1</td>' in html
    assert "Berlin</a>" in html  # a linked graph entity
    assert re.search(r'data-testid="recall-count"><b>1</b> time returned', html)
    assert "1 by agents, 0 by admin searches" in html
    assert "<b>v1</b> <span class=\"badge c-create\">create</span>" in html


async def test_keyword_search_filters_and_paginates(login: Login, keys: dict[str, str], seeded: dict[str, str]) -> None:
    c = await login(keys["a_admin"])
    html = (await c.get("/admin/memories", params={"user": "alice", "q": "berlin"})).text
    rows = re.findall(r'data-memory-id="([^"]+)"', html)
    assert set(rows) == {seeded["berlin"], seeded["berlin_fact"]}
    html = (await c.get("/admin/memories", params={"user": "alice", "type": "semantic"})).text
    assert seeded["berlin_fact"] in html and seeded["berlin"] not in html
    html = (await c.get("/admin/memories", params={"since": "2999-01-01"})).text
    assert "No memories match." in html
    first = (await c.get("/admin/memories", params={"user": "alice", "limit": 10, "status": "all"})).text
    ids = re.findall(r'data-memory-id="([^"]+)"', first)
    more = re.search(r'<tr id="more-row".*?href="([^"]+)"', first, re.S)
    if len(ids) < 10:  # the write pipeline derived fewer memories than a page: no cursor then
        assert more is None
        return
    assert more is not None
    nxt = (await c.get(more.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})).text
    assert not set(re.findall(r'data-memory-id="([^"]+)"', nxt)) & set(ids)
    r = await c.get("/admin/memories", params={"type": "bogus", "since": "yesterday"})
    assert r.status_code == 400 and "bogus" in r.text
    r = await c.get("/admin/memories", params={"cursor": "garbage"})
    assert r.status_code == 400 and 'role="alert"' in r.text
    r = await c.get("/admin/audit", params={"cursor": "garbage"})
    assert r.status_code == 400


async def test_semantic_search_uses_recall_within_one_user(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                                           memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    html = (await c.get("/admin/memories", params={"user": "alice", "q": "Where does Alice live?", "mode": "semantic"})).text
    ids = re.findall(r'data-memory-id="([^"]+)"', html)
    assert {seeded["berlin"], seeded["berlin_fact"]} & set(ids[:3])  # recall's own ranking is tested in tests/api
    # Operator browsing is not recall: no recall event, no access count.
    assert memory_os.records.events("tenant-a", kinds=["recall"]).items == []
    assert memory_os.get("tenant-a", seeded["berlin"]).access_count == 0
    r = await c.get("/admin/memories", params={"q": "Berlin", "mode": "semantic"})
    assert r.status_code == 400 and "needs a user id" in r.text


# -- corrections and the audit log -----------------------------------------------------------

async def test_edit_records_a_version_with_a_diff_and_an_audit_entry(
    login: Login, keys: dict[str, str], seeded: dict[str, str], memory_os: MemoryOS,
) -> None:
    c = await login(keys["a_admin"])
    mid = seeded["berlin_fact"]
    form = (await c.get(f"/admin/memories/{mid}/edit")).text
    r = await c.post(f"/admin/memories/{mid}/edit", data={
        "csrf_token": csrf_of(form), "content": "Alice moved to Hamburg in May 2023.", "type": "semantic",
        "importance": "0.9", "metadata": '{"checked": true}'})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/memories/{mid}?done=updated"
    cube = memory_os.get("tenant-a", mid)
    assert (cube.content, cube.importance, cube.metadata, cube.version) == (
        "Alice moved to Hamburg in May 2023.", 0.9, {"checked": True, SLOT_KEY: "alice/residence"}, 2)
    html = (await c.get(r.headers["location"])).text
    assert "<del>Berlin</del><ins>Hamburg</ins>" in html
    assert re.search(r"<th>importance</th><td><del>[01]\.\d+</del></td><td>→</td><td><ins>0\.9</ins>", html)
    key = memory_os.records.key_by_hash(hash_key(keys["a_admin"]))
    assert key is not None
    key_id = key.id
    assert audit_events(memory_os)[0] == ("memory.update", f"admin:{key_id}", mid)
    audit = (await c.get("/admin/audit")).text
    assert f"admin:{key_id}" in audit and f'href="/admin/memories/{mid}"' in audit and "Hamburg" in audit


async def test_edit_rejects_bad_input_and_changes_nothing(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                                         memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    mid = seeded["cat"]
    token = await page_csrf(c, f"/admin/memories/{mid}/edit")
    for data, message in [({"metadata": "[1, 2]"}, "expected a JSON object"), ({"importance": "7"}, "importance"),
                          ({"event_time": "soon"}, "event_time"), ({"type": "gossip"}, "type")]:
        r = await c.post(f"/admin/memories/{mid}/edit", data={"csrf_token": token, **data})
        assert r.status_code == 422 and message in r.text
    r = await c.post(f"/admin/memories/{mid}/edit", data={"csrf_token": token, "content": memory_os.get("tenant-a", mid).content})
    assert r.headers["location"].endswith("done=nothing")
    assert memory_os.get("tenant-a", mid).version == 1 and audit_events(memory_os) == []


async def test_delete_and_restore_are_audited(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                              memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    mid = seeded["cat"]
    token = await page_csrf(c, f"/admin/memories/{mid}")
    r = await c.post(f"/admin/memories/{mid}/delete", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/memories/{mid}?done=deleted"
    assert memory_os.get("tenant-a", mid).status is MemoryStatus.DELETED
    html = (await c.get(r.headers["location"])).text
    assert "can be restored" in html and f'action="/admin/memories/{mid}/restore"' in html
    r = await c.post(f"/admin/memories/{mid}/restore", headers={"X-CSRF-Token": token})  # as htmx would send it
    assert r.status_code == 303
    assert memory_os.get("tenant-a", mid).status is MemoryStatus.ACTIVE
    assert [k for k, _, m in audit_events(memory_os)] == ["memory.restore", "memory.delete"]
    assert {m for _, _, m in audit_events(memory_os)} == {mid}


async def test_state_changes_need_the_csrf_token(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                                 memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    mid = seeded["cat"]
    token = await page_csrf(c)
    for data, headers in [({}, {}), ({"csrf_token": "wrong"}, {}), ({"csrf_token": token}, {"Origin": "https://evil.example"})]:
        r = await c.post(f"/admin/memories/{mid}/delete", data=data, headers=headers)
        assert r.status_code == 403
    other = await login(keys["a_admin"])  # another session's token does not fit this one
    r = await c.post(f"/admin/memories/{mid}/delete", data={"csrf_token": await page_csrf(other)})
    assert r.status_code == 403
    assert memory_os.get("tenant-a", mid).status is MemoryStatus.ACTIVE and audit_events(memory_os) == []


async def test_read_only_admin_can_look_but_not_change(login: Login, memory_os: MemoryOS, seeded: dict[str, str]) -> None:
    ro_key = create_key(memory_os.records, "tenant-a", admin=True, read_only=True)[1]
    c = await login(ro_key)
    mid = seeded["cat"]
    html = (await c.get(f"/admin/memories/{mid}")).text
    assert "read-only" in html and "/delete" not in html and ">Edit<" not in html
    token = csrf_of(html)  # the logout form carries it
    for action in ("delete", "archive", "restore", "edit"):
        r = await c.post(f"/admin/memories/{mid}/{action}", data={"csrf_token": token, "content": "changed"})
        assert r.status_code == 403 and "read-only" in r.text
    r = await c.post("/admin/users/alice/purge", data={"csrf_token": token, "confirm": "alice"})
    assert r.status_code == 403
    assert memory_os.get("tenant-a", mid).version == 1 and audit_events(memory_os) == []
    assert "Purge" not in (await c.get("/admin/users/alice")).text


async def test_tenant_boundaries_hold(login: Login, keys: dict[str, str], seeded: dict[str, str], memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    foreign = seeded["other_tenant"]
    token = await page_csrf(c)
    for method, path in [("GET", f"/admin/memories/{foreign}"), ("GET", f"/admin/memories/{foreign}/edit"),
                         ("POST", f"/admin/memories/{foreign}/delete"), ("POST", f"/admin/memories/{foreign}/restore"),
                         ("POST", f"/admin/memories/{foreign}/edit")]:
        r = await c.request(method, path, data={"csrf_token": token, "content": "x"} if method == "POST" else None)
        assert r.status_code == 404, path
    assert memory_os.get("tenant-b", foreign).status is MemoryStatus.ACTIVE
    for path in ["/admin/memories?status=all", "/admin/memories?user=alice&q=vault&mode=semantic",
                 "/admin/users/alice", "/admin/audit"]:
        assert "vault code" not in (await c.get(path)).text
    graph = (await c.get("/admin/users/alice/graph.json")).json()
    assert "vault" not in str(graph).lower()


async def test_purge_user_needs_the_typed_user_id(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                                  memory_os: MemoryOS) -> None:
    c = await login(keys["a_admin"])
    token = await page_csrf(c, "/admin/users/bob")
    r = await c.post("/admin/users/bob/purge", data={"csrf_token": token, "confirm": "bo"})
    assert r.status_code == 400
    r = await c.post("/admin/users/bob/purge", data={"csrf_token": token, "confirm": "bob"})
    assert r.status_code == 303 and r.headers["location"] == "/admin?done=purged"
    assert [s.user_id for s in memory_os.records.scope_stats("tenant-a")] == ["alice"]
    assert audit_events(memory_os)[0][0] == "user.purge"
    assert "user.purge" in (await c.get("/admin/audit")).text
    assert memory_os.records.scope_stats("tenant-b")[0].user_id == "alice"


# -- outbox dead letters --------------------------------------------------------------------

def make_dead_letter(os_: MemoryOS, tenant: str, memory_id: str, error: str) -> int:
    """A vector upsert of a stored memory whose attempts ran out, recorded as the drain records one."""
    entry = OutboxEntry(tenant=tenant, op=OutboxOp.UPSERT_VECTORS, payload={"ids": [memory_id]})
    with os_.records.unit_of_work() as uow:
        uow.enqueue([entry])
    assert entry.id is not None
    os_.records.fail_outbox(entry.id, error, retry_at=None)
    return entry.id


async def test_dead_letters_are_listed_per_tenant_and_retried_by_a_writer(
    login: Login, keys: dict[str, str], seeded: dict[str, str], memory_os: MemoryOS,
) -> None:
    mine = make_dead_letter(memory_os, "tenant-a", seeded["cat"], "vector index unreachable: tenant-a error")
    theirs = make_dead_letter(memory_os, "tenant-b", seeded["other_tenant"], "tenant-b error")
    c = await login(keys["a_admin"])
    html = (await c.get("/admin/outbox")).text
    assert "tenant-a error" in html and f'value="{mine}"' in html
    assert "tenant-b error" not in html and f'value="{theirs}"' not in html

    ro = await login(create_key(memory_os.records, "tenant-a", admin=True, read_only=True)[1])
    ro_html = (await ro.get("/admin/outbox")).text
    assert "tenant-a error" in ro_html and "Retry the selected" not in ro_html
    r = await ro.post("/admin/outbox/retry", data={"csrf_token": csrf_of(ro_html), "entry": str(mine)})
    assert r.status_code == 403

    token = csrf_of(html)
    r = await c.post("/admin/outbox/retry", data={"csrf_token": token, "entry": "not-a-number"})
    assert r.status_code == 400
    r = await c.post("/admin/outbox/retry", data={"csrf_token": token, "entry": str(theirs)})  # another tenant's
    assert r.status_code == 303 and r.headers["location"] == "/admin/outbox?retried=0"
    assert {e.id for e in memory_os.records.dead_outbox()} == {mine, theirs}

    r = await c.post("/admin/outbox/retry", data={"csrf_token": token})  # none chosen: all of the tenant's
    assert r.status_code == 303 and r.headers["location"] == "/admin/outbox?retried=1"
    assert "1 dead letter queued for a retry." in (await c.get(r.headers["location"])).text
    assert [e.id for e in memory_os.records.dead_outbox()] == [theirs]
    assert memory_os.outbox.drain().applied >= 1  # the revived entry is due now and the index works
    assert [e.id for e in memory_os.records.dead_outbox()] == [theirs]
    assert "No dead letters" in (await c.get("/admin/outbox")).text
    events = memory_os.records.events("tenant-a", kinds=["outbox.retry"]).items
    assert [(e.actor is not None, e.payload["revived"]) for e in events] == [(True, 1)]
    assert "outbox.retry" in (await c.get("/admin/audit")).text


# -- escaping -------------------------------------------------------------------------------

async def test_memory_text_and_user_ids_are_escaped(login: Login, keys: dict[str, str], seeded: dict[str, str],
                                                    memory_os: MemoryOS) -> None:
    memory_os.add("tenant-a", WriteRequest.model_validate({"user_id": '"><b>eve', "infer": False, "messages": [
        {"role": "user", "content": "hello from eve"}]}))
    c = await login(keys["a_admin"])
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; and &#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    for path in ["/admin/memories?user=alice", f"/admin/memories/{seeded['xss']}", "/admin/users/alice",
                 f"/admin/memories/{seeded['xss']}/edit"]:
        html = (await c.get(path)).text
        assert escaped in html, path
        assert "<script>alert" not in html and "<img src=x" not in html
    html = (await c.get("/admin")).text
    assert "&#34;&gt;&lt;b&gt;eve" in html and 'href="/admin/users/%22%3E%3Cb%3Eeve"' in html
    assert (await c.get("/admin/users/%22%3E%3Cb%3Eeve")).status_code == 200


async def test_templates_autoescape_and_load_nothing_from_elsewhere() -> None:
    assert env.autoescape is True
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'(src|href)="(https?:)?//', text), path.name
        assert "|safe" not in text and "<script>" not in text.replace("<script src=", ""), path.name
    assert {"htmx.min.js", "graph.js", "admin.css"} <= set(STATIC)


async def test_static_files_are_served_by_memsvc(login: Login) -> None:
    c = await login()
    r = await c.get("/admin/static/htmx.min.js")
    assert r.status_code == 200 and r.text.startswith("/*! htmx 2.0.11") and "0BSD" in r.text[:400]
    assert r.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert (await c.get("/admin/static/..%2Fsession.py")).status_code == 404
    assert (await c.get("/admin/static/nope.js")).status_code == 404


# -- graph and reports ----------------------------------------------------------------------

async def test_graph_json_is_capped_and_entities_list_their_memories(
    login: Login, keys: dict[str, str], seeded: dict[str, str], memory_os: MemoryOS, reports: Path,
) -> None:
    app = create_app(admin_settings(memory_os, reports, graph_max_nodes=2), memory_os=memory_os)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        page = await c.get("/admin/login")
        await c.post("/admin/login", data={"key": keys["a_admin"], "csrf_token": csrf_of(page.text)})
        g = (await c.get("/admin/users/alice/graph.json")).json()
        assert len(g["nodes"]) == 2 and g["cap"] == 2 and g["truncated"] and g["total_entities"] > 2
        assert g["nodes"][0]["name"] == "Alice"  # the most-mentioned first
        assert memory_os.graph is not None
        berlin = next(e for e in memory_os.graph.entities("tenant-a", "alice", limit=100).items if e.name == "Berlin")
        panel = (await c.get(f"/admin/users/alice/entities/{berlin.id}")).text
        assert f'href="/admin/memories/{seeded["berlin"]}"' in panel and "<b>move to</b>" in panel
        assert (await c.get("/admin/users/alice/entities/nope")).status_code == 404


async def test_reports_render_the_newest_run(login: Login, keys: dict[str, str], reports: Path) -> None:
    reports_root = reports
    c = await login(keys["a_admin"])
    r = await c.get("/admin/reports")
    assert r.status_code == 303 and r.headers["location"] == "/admin/reports/locomo/"
    html = (await c.get("/admin/reports/locomo/")).text
    assert '<td class="align-right">61.2</td>' in html and '<img src="locomo_systems.png"' in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html and "<script>alert(2)" not in html
    assert 'href="/admin/reports/lmeb/"' in html and "memsvc eval locomo" in html
    png = await c.get("/admin/reports/locomo/locomo_systems.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    for bad in ["/admin/reports/locomo/..%2Fresults.json", "/admin/reports/nope/", "/admin/reports/locomo/secret.txt",
                "/admin/reports/locomo/.hidden.png"]:
        assert (await c.get(bad)).status_code == 404, bad
    assert reports_mod.find_run(reports_root, "..") is None and reports_mod.find_run(reports_root, ".") is None
    run = reports_mod.find_run(reports_root, "locomo")
    assert run is not None and reports_mod.run_file(run, "../lmeb/report.md") is None


# -- pure helpers ---------------------------------------------------------------------------

def test_word_diff_marks_changed_words_only() -> None:
    assert views.word_diff("Alice lives in Berlin.", "Alice lives in Hamburg now.") == [
        ("equal", "Alice lives in "), ("delete", "Berlin"), ("insert", "Hamburg now"), ("equal", "."),
    ]


def test_timeline_buckets_by_event_time_and_type() -> None:
    def cube(day: str, t: MemoryType) -> MemoryCube:
        return MemoryCube(tenant="t", user_id="u", type=t, content=day, event_time=datetime.fromisoformat(day).replace(tzinfo=UTC))

    tl = views.timeline([cube("2024-01-01", MemoryType.EPISODIC), cube("2024-01-01", MemoryType.SEMANTIC),
                         cube("2024-01-03", MemoryType.EPISODIC)])
    assert tl.unit == "day" and [b.label for b in tl.bars] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert [b.total for b in tl.bars] == [2, 0, 1] and tl.max_count == 2
    assert [s[0] for s in tl.bars[0].segments] == ["episodic", "semantic"]
    assert [label for label, _ in tl.groups] == ["2024-01-03", "2024-01-01"]
    long = views.timeline([cube("2021-01-01", MemoryType.EPISODIC), cube("2024-06-15", MemoryType.EPISODIC)])
    assert long.unit == "month" and long.bars[-1].label == "2024-06"


async def test_policies_page_shows_the_loaded_gates_cross_validated_figures(login: Login, keys: dict[str, str]) -> None:
    import json

    from memsvc.learn import gates as G

    manifest = json.loads((G.PACKAGED / "manifest.json").read_text())
    c = await login(keys["a_admin"])
    html = (await c.get("/admin/policies")).text
    assert f"{manifest['name']} v{manifest['version']}" in html
    key, m = next(iter(manifest["metrics"]["rerank"].items()))
    row = re.search(rf"<tr><td>{re.escape(key)}</td>(.*?)</tr>", html, re.S)
    assert row is not None
    assert re.findall(r"<td>([^<]*)</td>", row.group(1))[1:3] == [
        f"{m['fused']['WR@500']:.3f}", f"{m['rerank']['WR@500']:.3f}"]
    assert str(manifest["metrics"]["write"]["all"]["auroc"]) in html
    # the cross-encoder stage's own cross-validation: first stage against first stage + cross-encoder
    from memsvc.learn import cross as X

    cross = json.loads((X.PACKAGED / "manifest.json").read_text())
    assert f"{cross['name']} v{cross['version']}" in html and f"top {cross['config']['depth']}" in html
    table = html.split('data-testid="gates-cross"')[1].split("</table>")[0]
    key, m = next(iter(cross["metrics"]["cross"].items()))
    row = re.search(rf"<tr><td>{re.escape(key)}</td>(.*?)</tr>", table, re.S)
    assert row is not None
    assert re.findall(r"<td>([^<]*)</td>", row.group(1)) == [
        str(m["rerank"]["n"]), f"{m['rerank']['WR@500']:.3f}", f"{m['rerank+cross']['WR@500']:.3f}",
        f"{m['rerank']['ER@10']:.3f}", f"{m['rerank+cross']['ER@10']:.3f}"]


async def test_skills_page_shows_state_statistics_and_history(login: Login, keys: dict[str, str],
                                                              seeded: dict[str, str]) -> None:
    c = await login(keys["a_admin"])
    html = (await c.get("/admin/skills")).text
    assert 'data-testid="history-capture-preferences"' in html and "trigger -= &#39;like&#39;" in html
    assert 'title="no LLM configured (MEMSVC_LLM__KIND)">inactive' in html
    assert "<strong>learned</strong> controller" in html
    mode = re.search(r'data-testid="controller-mode">(.*?)</span>', html, re.S)
    assert mode is not None and "capture-events" in mode.group(1) and "capture-procedures" not in mode.group(1)


async def test_lifecycle_page_shows_this_tenants_statuses_and_job_runs_with_failure_reasons(
        login: Login, keys: dict[str, str], seeded: dict[str, str], memory_os: MemoryOS) -> None:
    from memsvc.models import Job, JobState

    memory_os.records.save_job(Job(id="digest-failed", tenant="tenant-a", kind="lifecycle.digest", state=JobState.FAILED,
                                   attempts=3, error={"code": "internal", "message": "RuntimeError: index down"}))
    memory_os.records.save_job(Job(id="secret-b-job", tenant="tenant-b", kind="lifecycle.merge", state=JobState.FAILED,
                                   error={"code": "internal", "message": "tenant B reason"}))
    memory_os.delete("tenant-a", seeded["cat"])
    c = await login(keys["a_admin"])
    html = (await c.get("/admin/lifecycle")).text
    counts = memory_os.records.status_counts("tenant-a")
    tiles = dict((label, int(n)) for n, label in re.findall(r'<div class="tile"><b>(\d+)</b><span>([a-z]+)</span>', html))
    assert tiles == counts and counts["deleted"] == 1
    kinds = re.search(r'<table data-testid="job-kinds">(.*?)</table>', html, re.S)
    assert kinds is not None
    row = re.search(r"<tr><td>lifecycle.digest</td>(.*?)</tr>", kinds.group(1), re.S)
    assert row is not None and re.findall(r'<td class="num">(\d+)</td>', row.group(1))[3] == "1"
    assert "digest-failed" in html and "RuntimeError: index down" in html
    assert "secret-b-job" not in html and "tenant B reason" not in html and "lifecycle.merge" not in html
