"""One run against a real `memsvc serve` on loopback, with keys from the CLI, across a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port

MEMSVC = [sys.executable, "-m", "api.cli"]


@contextmanager
def server(data_dir: Path, port: int) -> Iterator[str]:
    env = {**os.environ, "MEMSVC_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([*MEMSVC, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            raise TimeoutError("server did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def create_key(data_dir: Path, tenant: str) -> str:
    out = subprocess.run(
        [*MEMSVC, "keys", "create", "--tenant", tenant, "--data-dir", str(data_dir)],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def test_live_server_acceptance(tmp_path: Path) -> None:
    port = free_port()
    with server(tmp_path, port) as url:
        key = create_key(tmp_path, "demo")  # while the server runs, as a new user would
        other = create_key(tmp_path, "other")
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{url}/v1/memories", headers=h, timeout=60, json={"user_id": "alice", "messages": [
            {"id": "m1", "role": "user", "name": "Alice", "content": "I moved to Berlin in May 2023.", "timestamp": "2023-05-20T10:00:00Z"},
            {"id": "m2", "role": "user", "name": "Alice", "content": "My cat is called Miso.", "timestamp": "2023-05-20T10:01:00Z"},
        ]})
        assert r.status_code == 200
        mid = r.json()["written"][0]["id"]
        r = httpx.get(f"{url}/v1/memories/{mid}", headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with server(tmp_path, port) as url:
        r = httpx.post(f"{url}/v1/memories/search", headers=h, timeout=60, json={"user_id": "alice", "query": "Where does Alice live?"})
        top = min(r.json()["results"], key=lambda x: x["rank"])
        assert "Berlin" in top["content"] and top["source_ids"] == ["m1"]
        r = httpx.delete(f"{url}/v1/users/alice", headers=h, timeout=60)
        assert r.status_code == 200 and r.json()["deleted"]["memories"] == 4
        r = httpx.post(f"{url}/v1/memories/search", headers=h, timeout=60, json={"user_id": "alice", "query": "Berlin"})
        assert r.json()["results"] == []
