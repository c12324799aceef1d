"""kill -9 of a real `memsvc serve` during writes, `wait` true and false, then a restart:
0 lost acknowledgements, 0 acknowledged-but-unsearchable, 0 duplicates.

Bounded in CI (`MEMSVC_SUITE_CYCLES`, default 1); `make crash` runs 50 cycles, also on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, reset_postgres
from tests.suites.common import Server, report, size

USERS = ("u0", "u1", "u2")


def _writer(url: str, key: str, cycle: int, stop: threading.Event, acked: list[dict[str, Any]]) -> None:
    h = {"Authorization": f"Bearer {key}"}
    n = 0
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        while not stop.is_set():
            n += 1
            wait = n % 2 == 0
            user = USERS[n % len(USERS)]
            mids = [f"c{cycle}-w{n}-{i}" for i in range(2)]
            body = {"user_id": user, "wait": wait, "infer": n % 3 != 0, "messages": [
                {"id": m, "role": "user", "name": "Ann", "content": f"I noted token{m.replace('-', '')} today."}
                for m in mids]}
            try:
                r = c.post("/v1/memories", json=body)
            except httpx.HTTPError:
                return  # the server died mid-request: not acknowledged
            if r.status_code in (200, 202):
                acked.append({"user": user, "ids": mids, "job": r.json().get("job_id")})


def _episodic_sources(c: httpx.Client, user: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    cursor = None
    while True:
        params: dict[str, Any] = {"user_id": user, "type": "episodic", "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/v1/memories", params=params).json()
        for item in page["items"]:
            seen.update(item["source_ids"])
        cursor = page["next_cursor"]
        if not cursor:
            return seen


def _settled(c: httpx.Client, jobs: list[str], timeout_s: float = 300) -> None:
    """Wait until every acknowledged job ended and the outbox is empty."""
    deadline = time.monotonic() + timeout_s
    left = list(jobs)
    while time.monotonic() < deadline:
        left = [j for j in left if c.get(f"/v1/jobs/{j}").json().get("state") not in ("done", "failed")]
        ready = c.get("/readyz").json()
        if not left and ready["outbox_pending"] == 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"jobs {left[:5]} or the outbox did not settle")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def test_kill_9_during_writes_loses_nothing(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cycles = size("cycles", 1)
    rng = random.Random(13)
    env = {"MEMSVC_JOBS__KIND": "inprocess", "MEMSVC_OUTBOX__GRACE_S": "1", "MEMSVC_OUTBOX__INTERVAL_S": "0.5", "MEMSVC_JOBS__SWEEP_INTERVAL_S": "0.5",
           "MEMSVC_JOBS__LEASE_S": "3"}
    if backend == "postgresql":
        env |= {"MEMSVC_RECORDS__KIND": "postgresql", "MEMSVC_RECORDS__URL": reset_postgres(request.getfixturevalue("postgres_url"))}
    server = Server(tmp_path / "data", free_port(), env)
    server.start()
    key = server.key("crash")
    acked: list[dict[str, Any]] = []
    figures: dict[str, Any] = {"backend": backend, "cycles": 0, "start_s": [], "sampled": 0}
    lost: list[str] = []
    duplicates: list[str] = []
    unsearchable: list[str] = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for cycle in range(cycles):
            stop = threading.Event()
            before = len(acked)
            writer = threading.Thread(target=_writer, args=(server.url, key, cycle, stop, acked))
            writer.start()
            time.sleep(rng.uniform(1.5, 4.0))
            server.kill()
            stop.set()
            writer.join(timeout=60)
            figures["start_s"].append(round(server.start(), 1))
            _settled(c, [a["job"] for a in acked[before:] if a["job"]])
            figures["cycles"] += 1
            # Every acknowledged message once, and a sample searchable by its own token.
            seen: Counter[str] = Counter()
            for user in USERS:
                seen += _episodic_sources(c, user)
            ids = [(a["user"], m) for a in acked for m in a["ids"]]
            lost = [m for _, m in ids if seen[m] == 0]
            duplicates = [m for m, k in seen.items() if k > 1]
            for user, m in rng.sample(ids[before * 2:], min(10, len(ids) - before * 2)):
                r = c.post("/v1/memories/search", json={"user_id": user, "query": f"token{m.replace('-', '')}",
                                                        "preset": "keyword", "top_k": 5})
                figures["sampled"] += 1
                if not any(m in hit["source_ids"] for hit in r.json()["results"]):
                    unsearchable.append(m)
    figures["stop_s"] = round(server.stop(), 1)
    figures |= {"acknowledged_requests": len(acked), "acknowledged_messages": sum(len(a["ids"]) for a in acked),
                "wait_false": sum(1 for a in acked if a["job"]), "lost": len(lost), "duplicates": len(duplicates),
                "unsearchable": len(unsearchable)}
    report(f"crash-{backend}", figures)
    assert (lost, duplicates, unsearchable) == ([], [], [])
    assert figures["acknowledged_messages"] > 0 and figures["wait_false"] > 0
