"""Issue 13 (B15): keys list / revoke / rotate, optional expiry, all honoured by the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.app import create_app
from api.auth import create_key, hash_key
from api.cli import app as cli
from memsvc.memory_os import MemoryOS
from memsvc.models import utcnow
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.api.test_contract import assert_error

runner = CliRunner()


def invoke(data_dir: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(cli, [*args, "--data-dir", str(data_dir)])
    assert result.exit_code == code, result.output
    return result.stdout


def created_key(out: str) -> str:
    return out.strip().splitlines()[-1]


def listed(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in invoke(data_dir, "keys", "list", "--json").splitlines()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[MemoryOS]:
    os_ = build_memory_os(make_settings(tmp_path))
    yield os_
    os_.close()


def status(os_: MemoryOS, key: str) -> int:
    async def go() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(memory_os=os_)),
                                     base_url="http://memsvc", headers={"Authorization": f"Bearer {key}"}) as c:
            r = await c.get("/v1/policies")
            if r.status_code == 401:
                assert_error(r, 401, "unauthenticated")
            return r.status_code

    import anyio

    return anyio.run(go)


def test_list_shows_every_key_but_never_its_secret(tmp_path: Path) -> None:
    k1 = created_key(invoke(tmp_path, "keys", "create", "--tenant", "acme", "--admin"))
    k2 = created_key(invoke(tmp_path, "keys", "create", "--tenant", "beta", "--read-only", "--expires-in", "30d"))
    rows = listed(tmp_path)
    assert [(r["tenant"], r["flags"], r["revoked"], r["prefix"]) for r in rows] == [
        ("acme", "admin", False, k1[:12]), ("beta", "read-only", False, k2[:12])]
    assert rows[0]["expires"] is None
    days = (utcnow() - timedelta(days=30)).isoformat()
    assert rows[1]["expires"] > days
    table = invoke(tmp_path, "keys", "list")
    for secret in (k1, k2, hash_key(k1), hash_key(k2)):
        assert secret not in table and secret not in json.dumps(rows)
    assert table.splitlines()[0].split() == ["id", "prefix", "tenant", "flags", "created", "expires", "revoked"]
    assert [r["tenant"] for r in listed_tenant(tmp_path, "beta")] == ["beta"]


def listed_tenant(data_dir: Path, tenant: str) -> list[dict[str, Any]]:
    out = invoke(data_dir, "keys", "list", "--json", "--tenant", tenant)
    return [json.loads(line) for line in out.splitlines()]


def test_revoke_is_honoured_by_the_api(tmp_path: Path) -> None:
    key = created_key(invoke(tmp_path, "keys", "create", "--tenant", "acme"))
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        assert status(os_, key) == 200
        invoke(tmp_path, "keys", "revoke", key[:12])
        assert status(os_, key) == 401
    finally:
        os_.close()
    assert [r["revoked"] for r in listed(tmp_path)] == [True]
    invoke(tmp_path, "keys", "revoke", "msk_nothere", code=1)


def test_rotate_keeps_tenant_and_flags_and_revokes_the_old_key(tmp_path: Path) -> None:
    old = created_key(invoke(tmp_path, "keys", "create", "--tenant", "acme", "--read-only"))
    old_id = listed(tmp_path)[0]["id"]
    new = created_key(invoke(tmp_path, "keys", "rotate", old_id))
    rows = {r["prefix"]: r for r in listed(tmp_path)}
    assert (rows[old[:12]]["revoked"], rows[new[:12]]["revoked"]) == (True, False)
    assert (rows[new[:12]]["tenant"], rows[new[:12]]["flags"]) == ("acme", "read-only")
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        assert (status(os_, old), status(os_, new)) == (401, 200)
    finally:
        os_.close()
    invoke(tmp_path, "keys", "rotate", old_id, code=1)  # already revoked


def test_rotate_with_grace_lets_the_old_key_work_until_then(tmp_path: Path) -> None:
    old = created_key(invoke(tmp_path, "keys", "create", "--tenant", "acme"))
    new = created_key(invoke(tmp_path, "keys", "rotate", old[:12], "--grace", "1h"))
    rows = {r["prefix"]: r for r in listed(tmp_path)}
    assert rows[old[:12]]["revoked"] is False
    assert rows[old[:12]]["expires"] is not None
    assert (utcnow() + timedelta(minutes=59)).isoformat() < rows[old[:12]]["expires"]
    assert rows[old[:12]]["expires"] < (utcnow() + timedelta(minutes=61)).isoformat()
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        assert (status(os_, old), status(os_, new)) == (200, 200)
    finally:
        os_.close()


def test_expired_key_is_401(served: MemoryOS) -> None:
    _, live = create_key(served.records, "acme", expires_at=utcnow() + timedelta(hours=1))
    _, dead = create_key(served.records, "acme", expires_at=utcnow() - timedelta(seconds=1))
    assert (status(served, live), status(served, dead)) == (200, 401)


@pytest.mark.parametrize("args", [
    ["--expires-in", "0d"], ["--expires-in", "soon"], ["--expires-at", "2001-01-01T00:00:00Z"],
    ["--expires-at", "tomorrow"], ["--expires-in", "1d", "--expires-at", "2099-01-01T00:00:00Z"],
])
def test_bad_expiry_options_create_nothing(tmp_path: Path, args: list[str]) -> None:
    invoke(tmp_path, "keys", "create", "--tenant", "acme", *args, code=2)
    assert listed(tmp_path) == []


def test_reserved_tenant_names_are_refused(tmp_path: Path) -> None:
    """`_system` holds the job runner's own jobs: no key may belong to it (or to any `_` tenant)."""
    out = runner.invoke(cli, ["keys", "create", "--tenant", "_system", "--data-dir", str(tmp_path)])
    assert out.exit_code == 2 and "reserved" in out.output
    assert invoke(tmp_path, "keys", "list", "--json") == ""
