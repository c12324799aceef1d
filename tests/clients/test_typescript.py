"""The TypeScript client: its generated types match the server's OpenAPI, and `npm test` passes against the live server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import Live

TS = Path(__file__).resolve().parents[2] / "clients" / "typescript"


def _need_node() -> None:
    # CI must run these (`make test` runs `npm ci` first); elsewhere they skip without Node.
    missing = shutil.which("node") is None or not (TS / "node_modules" / ".bin" / "tsc").exists()
    if missing:
        reason = "Node 20+ and `npm ci` in clients/typescript are needed (make ts-deps)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_generated_types_match_the_server_openapi() -> None:
    _need_node()
    out = subprocess.run([sys.executable, str(TS / "scripts" / "openapi.py"), "--check"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(TS.parents[1])})
    assert out.returncode == 0, out.stderr


def test_typescript_client_against_live_server(live: Live) -> None:
    _need_node()
    env = {**os.environ, "MEMSVC_URL": live.url, "MEMSVC_API_KEY": live.key_a, "MEMSVC_API_KEY_B": live.key_b}
    out = subprocess.run(["npm", "test", "--silent"], cwd=TS, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# pass 4" in out.stdout and "# fail 0" in out.stdout
