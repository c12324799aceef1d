"""16+ clients on one real server, mixed routes (write, search, patch, delete, list, history,
feedback, jobs): no 5xx, and no lost update (every acknowledged PATCH is a version in the history).

Bounded in CI (`MEMSVC_SUITE_SECONDS`, default 12 s); `make concurrency` runs 180 s.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.suites.common import Server, report, size

CLIENTS = 16


def test_mixed_routes_from_16_clients(tmp_path: Path) -> None:
    seconds = size("seconds", 12)
    server = Server(tmp_path / "data", free_port(), {"MEMSVC_JOBS__KIND": "inprocess"})
    server.start()
    key = server.key("load")
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=h, timeout=120) as c:
        seed = c.post("/v1/memories", json={"user_id": "shared", "infer": False, "messages": [
            {"id": "s0", "role": "user", "content": "A memory every client corrects at once."}]}).json()
        shared_id = seed["written"][0]["id"]
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()  # "route status" of every 5xx
    patched_versions: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        rng = random.Random(n)
        mine: list[str] = []
        with httpx.Client(base_url=server.url, headers=h, timeout=120) as c:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                route, r = _one(c, rng, n, i, mine, shared_id)
                with lock:
                    calls[route] += 1
                    if r.status_code >= 500:
                        errors[f"{route} {r.status_code}"] += 1
                    if route == "PATCH shared" and r.status_code == 200:
                        patched_versions.append(r.json()["version"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with httpx.Client(base_url=server.url, headers=h, timeout=120) as c:
        history = [v["version"] for v in c.get(f"/v1/memories/{shared_id}/history").json()["versions"]]
    server.stop()
    lost = sorted(set(patched_versions) - set(history))
    report("concurrency", {"clients": CLIENTS, "seconds": seconds, "calls": dict(calls),
                           "5xx": dict(errors), "patches": len(patched_versions), "lost_updates": len(lost)})
    assert errors == Counter()
    assert len(set(patched_versions)) == len(patched_versions) and lost == []  # each PATCH its own version
    assert history == list(range(1, len(history) + 1))


def _one(c: httpx.Client, rng: random.Random, n: int, i: int, mine: list[str], shared: str) -> tuple[str, httpx.Response]:
    user = f"user{n % 4}"
    pick = rng.random()
    if pick < 0.25 or not mine:
        body: dict[str, Any] = {"user_id": user, "wait": rng.random() < 0.7, "messages": [
            {"id": f"c{n}-{i}", "role": "user", "content": f"I visited city{rng.randint(1, 50)} with client {n}."}]}
        r = c.post("/v1/memories", json=body)
        if r.status_code == 200:
            mine.extend(m["id"] for m in r.json()["written"])
        elif r.status_code == 202:
            return "GET job", c.get(f"/v1/jobs/{r.json()['job_id']}")
        return "POST memories", r
    if pick < 0.45:
        return "POST search", c.post("/v1/memories/search", json={"user_id": user, "query": f"city{rng.randint(1, 50)}"})
    if pick < 0.55:
        return "PATCH shared", c.patch(f"/v1/memories/{shared}", json={"metadata": {"by": n, "i": i}})
    if pick < 0.65:
        return "PATCH own", c.patch(f"/v1/memories/{rng.choice(mine)}", json={"importance": round(rng.random(), 3)})
    if pick < 0.72:
        return "DELETE own", c.delete(f"/v1/memories/{mine.pop(rng.randrange(len(mine)))}")
    if pick < 0.82:
        return "GET list", c.get("/v1/memories", params={"user_id": user, "limit": 20})
    if pick < 0.92:
        return "GET history", c.get(f"/v1/memories/{rng.choice(mine)}/history")
    return "POST feedback", c.post("/v1/feedback", json={"user_id": user, "query": "city", "used_memory_ids": [rng.choice(mine)]})
