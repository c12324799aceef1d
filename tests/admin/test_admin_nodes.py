"""Issue 13 (B17): a logout on one node is honoured by every node that shares the record database."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.admin.session import COOKIE
from api.app import create_app
from api.auth import create_key
from memsvc.config import AdminConfig, SqliteRecords
from memsvc.memory_os import MemoryOS
from storage.registry import build_memory_os
from tests.admin.conftest import BASE, csrf_of, page_csrf

pytestmark = pytest.mark.anyio

SECRET = "s" * 64  # the same signing secret on every node, as the README asks


async def test_logout_on_one_node_ends_the_session_on_the_other(memory_os: MemoryOS, tmp_path: Path) -> None:
    records = memory_os.settings.records
    if isinstance(records, SqliteRecords):  # the first node's SQLite file, shared
        records = SqliteRecords(path=records.path or memory_os.settings.data_dir / "memsvc.db")
    node_b_dir = tmp_path / "node-b"
    settings_a = memory_os.settings.model_copy(update={"admin": AdminConfig(secret=SECRET)})
    settings_b = settings_a.model_copy(update={"data_dir": node_b_dir, "records": records,
                                               "vectors": type(settings_a.vectors)()})
    node_b = build_memory_os(settings_b)
    try:
        key = create_key(memory_os.records, "tenant-a", admin=True)[1]
        app_a = create_app(settings_a, memory_os=memory_os)
        app_b = create_app(settings_b, memory_os=node_b)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_a), base_url=BASE) as a, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app_b), base_url=BASE) as b:
            page = await a.get("/admin/login")
            r = await a.post("/admin/login", data={"key": key, "csrf_token": csrf_of(page.text)})
            assert r.status_code == 303, r.text
            cookie = a.cookies[COOKIE]
            b.cookies.set(COOKIE, cookie, domain="admin.test", path="/admin")
            assert (await b.get("/admin")).status_code == 200  # node B accepts node A's session
            r = await a.post("/admin/logout", data={"csrf_token": await page_csrf(a)})
            assert r.status_code == 303 and r.headers["location"] == "/admin/login"
            r = await b.get("/admin")
            assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
            assert not (node_b_dir / "admin_revoked.json").exists()
            assert not (memory_os.settings.data_dir / "admin_revoked.json").exists()
    finally:
        node_b.close()


async def test_expired_revocations_are_dropped(memory_os: MemoryOS) -> None:
    from datetime import timedelta

    from memsvc.models import utcnow

    memory_os.records.revoke_session("old", utcnow() - timedelta(seconds=1))
    assert memory_os.records.session_revoked("old") is True  # kept until the next logout sweeps
    memory_os.records.revoke_session("live", utcnow() + timedelta(hours=1))
    memory_os.records.revoke_session("live", utcnow() + timedelta(hours=1))  # twice: no conflict
    assert (memory_os.records.session_revoked("old"), memory_os.records.session_revoked("live")) == (False, True)
    assert memory_os.records.session_revoked("never") is False
