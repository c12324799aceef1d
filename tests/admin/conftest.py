"""Admin UI fixtures: a seeded real MemoryOS, evaluation report files, and logged-in HTTP clients."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from memsvc.config import AdminConfig, Settings
from memsvc.memory_os import MemoryOS
from memsvc.schemas import WriteRequest
from tests.api.conftest import keys, memory_os  # noqa: F401  (fixtures reused here)

BASE = "http://admin.test"
XSS = '<script>alert(1)</script> and "><img src=x onerror=alert(1)>'
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def seed(os_: MemoryOS) -> dict[str, str]:
    """Alice's dated turns (one of them hostile HTML), a second user, and a memory of tenant B."""
    turns = [
        ("m1", "I moved to Berlin in May 2023.", "2023-05-20T10:00:00Z"),
        ("m2", "My cat is called Miso.", "2023-05-20T10:01:00Z"),
        ("m3", "I work as a nurse at the Charité hospital.", "2023-06-02T09:00:00Z"),
        ("m4", XSS, "2023-07-01T12:00:00Z"),
    ]
    written = os_.add("tenant-a", WriteRequest.model_validate({"user_id": "alice", "messages": [
        {"id": i, "role": "user", "name": "Alice", "content": c, "timestamp": ts} for i, c, ts in turns]}))
    os_.add("tenant-a", WriteRequest.model_validate({"user_id": "bob", "messages": [
        {"id": "b1", "role": "user", "name": "Bob", "content": "I prefer green tea in the morning.",
         "timestamp": "2024-01-05T08:00:00Z"}]}))
    other = os_.add("tenant-b", WriteRequest.model_validate({"user_id": "alice", "messages": [
        {"id": "x1", "role": "user", "content": "Tenant B secret: the vault code is 4711."}]}))
    by_source = {(w["source_ids"][0], w["type"]): w["id"] for w in written.written}
    return {
        "berlin": by_source[("m1", "episodic")],
        "berlin_fact": by_source[("m1", "semantic")],
        "cat": by_source[("m2", "episodic")],
        "xss": by_source[("m4", "episodic")],
        "other_tenant": other.written[0]["id"],
    }


def write_reports(root: Path) -> Path:
    """Two evaluation runs shaped like `evals.report.write_outputs` output (newest: locomo)."""
    old = root / "lmeb"
    old.mkdir(parents=True)
    (old / "report.md").write_text("# memsvc evaluation\n\nOlder run.\n", encoding="utf-8")
    run = root / "locomo"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "config": {"command": "memsvc eval locomo", "systems": ["memsvc", "bm25"], "top_k": 10,
                   "budgets": [250, 500, 1000], "started": "2025-01-01T00:00:00Z"},
        "tasks": {"locomo": {}}}), encoding="utf-8")
    (run / "report.md").write_text(
        "# memsvc evaluation\n\nCommand: `memsvc eval locomo`\n\n## Summary (nDCG@10)\n\n"
        "| task | type | n | memsvc | bm25 |\n| --- | --- | ---: | ---: | ---: |\n"
        "| locomo | dialogue | 120 | 61.2 | 48.9 |\n\n"
        "A raw <script>alert(2)</script> in a report stays text.\n\n![locomo_systems.png](locomo_systems.png)\n",
        encoding="utf-8")
    _png(run / "locomo_systems.png")
    os.utime(old / "report.md", (1_600_000_000, 1_600_000_000))
    return root


def _png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.bar(["ER@10", "WR@500", "nDCG@10"], [0.71, 0.64, 0.61], label="memsvc")
    ax.bar(["ER@10", "WR@500", "nDCG@10"], [0.52, 0.47, 0.49], label="bm25", alpha=0.6)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("locomo: systems side by side")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def admin_settings(os_: MemoryOS, reports: Path, **admin: Any) -> Settings:
    return os_.settings.model_copy(update={"admin": AdminConfig(reports_dir=reports, **admin)})


@pytest.fixture
def seeded(memory_os: MemoryOS) -> dict[str, str]:  # noqa: F811
    return seed(memory_os)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return write_reports(tmp_path / "eval-out")


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no csrf_token field on the page"
    return m.group(1)


Login = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def login(memory_os: MemoryOS, reports: Path) -> AsyncIterator[Login]:  # noqa: F811
    """`await login(key)` -> a client holding an admin session (or the refused login response)."""
    app = create_app(admin_settings(memory_os, reports), memory_os=memory_os)
    opened: list[httpx.AsyncClient] = []

    def client() -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        opened.append(c)
        return c

    async def do(key: str | None = None, *, expect: int = 303) -> httpx.AsyncClient:
        c = client()
        if key is None:
            return c
        page = await c.get("/admin/login")
        r = await c.post("/admin/login", data={"key": key, "csrf_token": csrf_of(page.text), "next": "/admin"})
        assert r.status_code == expect, r.text
        return c

    yield do
    for c in opened:
        await c.aclose()


async def page_csrf(c: httpx.AsyncClient, path: str = "/admin") -> str:
    r = await c.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)
