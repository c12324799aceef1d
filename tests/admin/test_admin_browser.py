"""The admin UI in a real browser: Debian's Chromium driven by Playwright against uvicorn on loopback.

Screenshots of the main pages go to test-artifacts/screenshots/ (look at them after a UI change).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.app import create_app
from api.auth import create_key
from memsvc.config import Settings
from memsvc.memory_os import MemoryOS
from memsvc.models import MemoryStatus
from memsvc.schemas import WriteRequest
from storage.registry import build_memory_os
from tests.admin.conftest import XSS, admin_settings, seed, write_reports
from tests.conftest import free_port

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("MEMSVC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@dataclass
class Server:
    url: str
    os: MemoryOS
    keys: dict[str, str]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("admin-browser")
    os_ = build_memory_os(Settings(data_dir=root / "data"))
    ids = seed(os_)
    os_.add("tenant-a", WriteRequest.model_validate({"user_id": "carol", "infer": False, "messages": [
        {"id": f"c{i}", "role": "user", "content": f"Carol note {i:02d}: day {i} of the trip.",
         "timestamp": f"2024-03-{i:02d}T09:00:00Z"} for i in range(1, 16)]}))
    keys = {
        "admin": create_key(os_.records, "tenant-a", admin=True)[1],
        "ro_admin": create_key(os_.records, "tenant-a", admin=True, read_only=True)[1],
        "plain": create_key(os_.records, "tenant-a")[1],
    }
    app = create_app(admin_settings(os_, write_reports(root / "eval-out")), memory_os=os_)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}", os_, keys, ids)
    srv.should_exit = True
    thread.join(timeout=15)
    os_.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does this)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@dataclass
class Tab:
    """A fresh browser context (no cookies) that records what must never happen."""

    page: Any
    base: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def go(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        self.until("window.htmx !== undefined")  # deferred script ran: hx-* attributes live
        return response

    def until(self, expression: str, timeout_s: float = 30.0) -> None:
        """Wait for a page expression to hold. Not `wait_for_function`: when it has to poll, it
        evaluates a string in the page, which the admin's CSP (no 'unsafe-eval') refuses."""
        deadline = time.monotonic() + timeout_s
        while not self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout_s} s: {expression}")
            time.sleep(0.05)

    def login(self, key: str) -> None:
        self.go("/admin/login")
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    t = Tab(page, server.url)

    def on_dialog(dialog: Any) -> None:
        t.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: t.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: t.errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(server.url) else t.foreign.append(r.url))
    yield t
    context.close()
    assert t.dialogs == [], "a dialog opened: injected script ran"
    assert t.foreign == [], "the page reached outside memsvc"
    # A 401/403/404 we provoke on purpose is logged by Chromium as a failed resource; CSP and JS errors are not.
    assert [e for e in t.errors if "status of 40" not in e] == []


def test_login_refuses_a_non_admin_key(tab: Tab, server: Server) -> None:
    tab.go("/admin")
    assert tab.page.url.startswith(server.url + "/admin/login?next=")
    tab.shot("01-login")
    tab.login(server.keys["plain"])
    assert tab.page.locator("[role=alert]").inner_text() == "That key is not an admin key."
    assert server.keys["plain"] not in tab.page.url
    assert not [c for c in tab.page.context.cookies() if c["name"] == "memsvc_admin"]


def test_login_shows_users_with_counts(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    assert tab.page.url == server.url + "/admin"
    cookie = next(c for c in tab.page.context.cookies() if c["name"] == "memsvc_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert tab.page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
    users = tab.page.locator("[data-testid=users] tbody tr td:first-child").all_inner_texts()
    assert users == ["alice", "bob", "carol"]
    tab.shot("02-overview")


def test_keyword_and_semantic_search_then_open_detail(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    tab.go("/admin/memories")
    tab.page.fill("input[name=user]", "alice")
    tab.page.fill("input[name=q]", "berlin")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url(re.compile(r".*q=berlin.*"))  # htmx pushed the filtered URL
    rows = tab.page.locator("[data-testid=memory-table] tbody tr[data-memory-id]")
    rows.first.wait_for()
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.memoryId)")) == sorted(
        [server.ids["berlin"], server.ids["berlin_fact"]])
    tab.shot("03-memories-keyword")

    tab.page.fill("input[name=q]", "Where does Alice live?")
    with tab.page.expect_response(lambda r: "mode=semantic" in r.url) as answer:
        tab.page.select_option("select[name=mode]", "semantic")  # a select change searches at once
    assert answer.value.status == 200
    tab.page.wait_for_url(re.compile(r".*mode=semantic.*"))
    tab.page.locator("[data-testid=memory-table] th", has_text="rank").wait_for()
    ranks = tab.page.locator("[data-testid=memory-table] tbody tr td:first-child").all_inner_texts()
    assert ranks == [str(i) for i in range(1, len(ranks) + 1)]  # best first
    top = tab.page.locator("[data-testid=memory-table] tbody tr td.content").all_inner_texts()[:3]
    assert any("Berlin" in t for t in top)  # the UI shows recall's answer (its quality is tested in tests/api)
    tab.shot("04-memories-semantic")

    tab.go("/admin/memories?user=alice&q=berlin&type=episodic")
    tab.page.click(f"a[href='/admin/memories/{server.ids['berlin']}']")
    tab.page.wait_for_url(f"**/admin/memories/{server.ids['berlin']}")
    assert tab.page.locator("[data-testid=memory-content]").inner_text() == "Alice: I moved to Berlin in May 2023."
    provenance = tab.page.locator("[data-testid=provenance] tbody tr").first.inner_text()
    assert "m1" in provenance and "I moved to Berlin in May 2023." in provenance
    assert tab.page.locator(".chips li", has_text="Berlin").count() == 1
    # The semantic search above returned it: logged as a recall by this admin, not by an agent.
    recall = tab.page.locator(".card", has_text="Recall").first.inner_text()
    assert "0 by agents, 0 by admin searches" in recall  # admin browsing is not counted as recall
    tab.shot("05-memory-detail")


def test_load_more_appends_the_next_page(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    tab.go("/admin/memories?user=carol&limit=10")
    rows = tab.page.locator("[data-testid=memory-table] tbody tr[data-memory-id]")
    assert rows.count() == 10
    with tab.page.expect_response(lambda r: "cursor=" in r.url):
        tab.page.click("#more-row a")
    tab.until("document.querySelectorAll('tr[data-memory-id]').length === 15")
    assert tab.page.url == tab.base + "/admin/memories?user=carol&limit=10"  # appended in place, no navigation
    notes = sorted(re.search(r"Carol note (\d+)", t).group(1) for t in rows.all_inner_texts())  # type: ignore[union-attr]
    assert notes == [f"{i:02d}" for i in range(1, 16)]  # every memory once, none twice
    assert tab.page.locator("#more-row").count() == 0


def test_edit_delete_restore_and_the_audit_log(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    mid = server.ids["berlin_fact"]
    tab.go(f"/admin/memories/{mid}")
    tab.page.click("a.button:has-text('Edit')")
    tab.page.fill("#content", "Alice moved to Hamburg in May 2023.")
    tab.page.fill("input[name=importance]", "0.95")
    tab.shot("06-edit")
    tab.page.click("button:has-text('Save')")
    tab.page.wait_for_url(f"**/admin/memories/{mid}?done=updated")
    assert tab.page.locator(".flash").inner_text() == "Memory updated."
    diff = tab.page.locator("[data-testid=diff]").first
    assert diff.locator("del").all_inner_texts() == ["Berlin"] and diff.locator("ins").all_inner_texts() == ["Hamburg"]
    tab.shot("07-detail-after-edit")

    tab.page.click("button.danger:has-text('Delete')")
    tab.page.wait_for_url("**?done=deleted")
    assert tab.page.locator("[data-testid=status]").inner_text() == "deleted"
    assert server.os.get("tenant-a", mid).status is MemoryStatus.DELETED
    tab.page.click("button:has-text('Restore')")
    tab.page.wait_for_url("**?done=restored")
    assert tab.page.locator("[data-testid=status]").inner_text() == "active"
    assert server.os.get("tenant-a", mid).content == "Alice moved to Hamburg in May 2023."

    tab.go("/admin/audit")
    rows = tab.page.locator("[data-testid=audit] tbody tr")
    kinds = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(3)]
    assert kinds == ["memory.restore", "memory.delete", "memory.update"]
    assert all(rows.nth(i).locator("td").nth(2).inner_text().startswith("admin:") for i in range(3))
    assert rows.nth(0).locator(f"a[href='/admin/memories/{mid}']").inner_text() == "Alice moved to Hamburg in May 2023."
    tab.shot("08-audit")


def test_hostile_memory_text_renders_as_text(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    tab.go("/admin/memories?user=alice&q=onerror")
    cell = tab.page.locator(f"tr[data-memory-id='{server.ids['xss']}'] td.content")
    assert XSS in cell.inner_text()
    tab.go(f"/admin/memories/{server.ids['xss']}")
    assert tab.page.locator("[data-testid=memory-content]").inner_text() == f"Alice: {XSS}"
    assert tab.page.locator("img[src=x]").count() == 0
    assert tab.page.locator("script:not([src])").count() == 0
    assert tab.page.evaluate("window.__xss === undefined")
    tab.page.wait_for_timeout(300)  # give an injected handler the chance to fire (the fixture fails on a dialog)
    tab.shot("09-xss-as-text")
    tab.go("/admin/users/alice")
    assert XSS in tab.page.locator(".tl-list").first.inner_text() or XSS in tab.page.inner_text("main")


def test_read_only_admin_sees_but_is_refused(tab: Tab, server: Server) -> None:
    tab.login(server.keys["ro_admin"])
    assert tab.page.locator("[data-testid=read-only-badge]").is_visible()
    mid = server.ids["cat"]
    tab.go(f"/admin/memories/{mid}")
    assert tab.page.locator("[data-testid=actions]").count() == 0
    assert tab.page.locator("button:has-text('Delete')").count() == 0
    tab.shot("10-read-only-detail")
    # Forge the change the buttons would have made, with this session's own CSRF token.
    status = tab.page.evaluate("""async (mid) => {
        const token = document.querySelector("input[name=csrf_token]").value;
        const r = await fetch(`/admin/memories/${mid}/delete`, {method: "POST",
            headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: `csrf_token=${token}`});
        return [r.status, await r.text()];
    }""", mid)
    assert status[0] == 403 and "read-only" in status[1]
    assert server.os.get("tenant-a", mid).status is MemoryStatus.ACTIVE


def test_timeline_and_graph(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    tab.go("/admin/users/alice")
    assert tab.page.locator("[data-testid=timeline] rect").count() >= 3
    tab.shot("11-user-timeline")
    tab.go("/admin/users/alice/graph")
    tab.page.wait_for_selector("canvas[data-loaded=true]")
    assert re.match(r"Showing \d+ of \d+ entities", tab.page.locator("[data-testid=graph-status]").inner_text())
    tab.page.evaluate("window.memsvcGraph.settle()")
    node = next(n for n in tab.page.evaluate("window.memsvcGraph.nodes()") if n["name"] == "Berlin")
    box = tab.page.locator("#graph").bounding_box()
    tab.page.mouse.click(box["x"] + node["x"], box["y"] + node["y"])
    tab.page.wait_for_selector("#entity-panel [data-testid=entity-name]")
    panel = tab.page.locator("#entity-panel")
    assert panel.locator("[data-testid=entity-name]").inner_text() == "Berlin"
    assert panel.locator(f"a[href='/admin/memories/{server.ids['berlin']}']").count() == 1
    tab.shot("12-graph")
    before = tab.page.evaluate("window.memsvcGraph.nodes()")
    tab.page.mouse.move(box["x"] + 40, box["y"] + 40)
    tab.page.mouse.wheel(0, -300)  # zoom in around the pointer
    tab.page.wait_for_timeout(100)
    after = tab.page.evaluate("window.memsvcGraph.nodes()")
    assert abs(after[0]["x"] - 40) > abs(before[0]["x"] - 40)  # nodes moved away from the zoom centre
    tab.page.click("#graph-fit")


def test_skills_policies_and_reports(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    tab.go("/admin/skills")
    assert tab.page.locator("[data-testid=skills] tbody tr").count() == len(server.os.skills())
    tab.shot("13-skills")
    tab.go("/admin/policies")
    assert tab.page.locator("[data-testid=policy-write_gate]").is_visible()
    tab.shot("14-policies")
    tab.page.click("nav a:has-text('Lifecycle')")
    tab.page.wait_for_url("**/admin/lifecycle")
    statuses = tab.page.locator("[data-testid=lifecycle-statuses] .tile b").all_inner_texts()
    counts = server.os.records.status_counts("tenant-a")
    assert statuses[:len(counts)] == [str(n) for n in counts.values()]
    assert tab.page.locator("nav a.active").inner_text() == "Lifecycle"
    tab.shot("14b-lifecycle")
    tab.go("/admin/reports")
    tab.page.wait_for_url("**/admin/reports/locomo/")
    img = tab.page.locator(".markdown img")
    img.wait_for()
    tab.until("document.querySelector('.markdown img').complete")
    assert img.evaluate("i => i.naturalWidth") > 100
    assert "61.2" in tab.page.locator(".markdown table").inner_text()
    tab.shot("15-reports")


def test_logout_ends_the_session(tab: Tab, server: Server) -> None:
    tab.login(server.keys["admin"])
    tab.page.click("button:has-text('Log out')")
    tab.page.wait_for_url("**/admin/login")
    tab.go("/admin/memories")
    assert "/admin/login" in tab.page.url
