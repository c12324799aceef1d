"""Recall logs and access counts are written in batches, off the request path, on the real store."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from memsvc.models import EventLog, MemoryCube, MemoryType, utcnow
from memsvc.recall_log import RecallLog
from storage.sql import SqlRecordStore, sqlite_url


def store_with(tmp_path: Path, n: int) -> tuple[SqlRecordStore, list[str]]:
    store = SqlRecordStore.from_url(sqlite_url(tmp_path / "m.db"))
    store.migrate()
    cubes = [MemoryCube(tenant="t", user_id="u", type=MemoryType.EPISODIC, content=f"note {i}") for i in range(n)]
    with store.unit_of_work() as uow:
        uow.insert_memories(cubes)
    return store, [c.id for c in cubes]


def recall(ids: list[str], user: str = "u") -> EventLog:
    return EventLog(tenant="t", user_id=user, kind="recall", payload={"query": "q", "returned": ids})


def test_a_batch_writes_events_and_summed_access_counts(tmp_path: Path) -> None:
    store, (a, b, c) = store_with(tmp_path, 3)
    log = RecallLog(store, interval_s=60)
    log.start()
    t0 = utcnow()
    log.add(recall([a, b]), [a, b], t0)
    log.add(recall([a]), [a], t0 + timedelta(seconds=1))
    log.add(recall([a, c]), [a, c], t0 - timedelta(seconds=5))
    assert store.events("t", kinds=["recall"]).items == []  # nothing written inside the requests
    assert log.flush() == 3
    assert [e.payload["returned"] for e in store.events("t", kinds=["recall"]).items] == [[a, c], [a], [a, b]]
    got = {m.id: (m.access_count, m.last_accessed_at) for m in store.get_memories("t", [a, b, c])}
    assert got == {a: (3, t0 + timedelta(seconds=1)), b: (1, t0 + timedelta(seconds=1)),
                   c: (1, t0 + timedelta(seconds=1))}
    log.close()
    store.close()


def test_the_thread_flushes_and_close_writes_the_rest(tmp_path: Path) -> None:
    store, (a,) = store_with(tmp_path, 1)
    log = RecallLog(store, interval_s=0.05)
    log.start()
    log.add(recall([a]), [a], utcnow())
    deadline = time.monotonic() + 10
    while not store.events("t", kinds=["recall"]).items and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(store.events("t", kinds=["recall"]).items) == 1
    log._stop.set()  # the thread is gone: close() still writes what came in since
    log.add(recall([a]), [a], utcnow())
    log.close()
    assert len(store.events("t", kinds=["recall"]).items) == 2
    assert store.get_memory("t", a).access_count == 2  # type: ignore[union-attr]
    store.close()


def test_forget_drops_a_purged_scope_s_pending_events(tmp_path: Path) -> None:
    store, (a,) = store_with(tmp_path, 1)
    log = RecallLog(store, interval_s=60)
    log.start()
    log.add(recall([a], user="u"), [a], utcnow())
    log.add(recall([], user="other"), [], utcnow())
    log.forget("t", "u")
    log.close()
    assert [e.user_id for e in store.events("t", kinds=["recall"]).items] == ["other"]
    store.close()


def test_before_start_each_recall_is_written_at_once(tmp_path: Path) -> None:
    store, (a,) = store_with(tmp_path, 1)
    RecallLog(store).add(recall([a]), [a], utcnow())  # e.g. `memsvc recall` on the command line
    assert len(store.events("t", kinds=["recall"]).items) == 1
    store.close()
