"""Job-queue fixtures: each `JobQueue` implementation, the Redis one on the local server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from memsvc.jobs import InProcessQueue
from memsvc.ports import JobQueue
from storage.sql import SqlRecordStore
from tests.storage.conftest import record_store  # noqa: F401 - the fixture, on SQLite and PostgreSQL

REDIS_URL = os.environ.get("MEMSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUES = ["inprocess", pytest.param("redis", marks=pytest.mark.service)]


def redis_or_skip() -> str:
    """The test Redis URL; skipped when unreachable, failed under CI."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL} (set MEMSVC_TEST_REDIS_URL): {exc}")
    return REDIS_URL


@pytest.fixture
def redis_stream() -> Iterator[str]:
    """A stream key of its own for the test, deleted afterwards."""
    import redis

    url = redis_or_skip()
    name = f"memsvc-test:{uuid.uuid4().hex[:12]}"
    yield name
    redis.Redis.from_url(url).delete(name)


@pytest.fixture(params=QUEUES)
def make_queue(request: pytest.FixtureRequest) -> Iterator[Callable[[float], JobQueue]]:
    """Queues of one kind sharing one backlog (one stream for Redis), with the given lease."""
    made: list[JobQueue] = []
    if request.param == "inprocess":
        shared: list[InProcessQueue] = []

        def factory(lease_s: float) -> JobQueue:
            if not shared:  # one process: every "consumer" shares the same in-memory queue
                shared.append(InProcessQueue(lease_s))
            return shared[0]
    else:
        from storage.queue.redis import RedisStreamsQueue

        stream = request.getfixturevalue("redis_stream")

        def factory(lease_s: float) -> JobQueue:
            q = RedisStreamsQueue(REDIS_URL, stream, "workers", lease_s)
            made.append(q)
            return q
    yield factory
    for q in made:
        q.close()


@pytest.fixture
def stores(record_store: SqlRecordStore) -> Iterator[tuple[SqlRecordStore, SqlRecordStore]]:  # noqa: F811
    """Two stores on one database, as two nodes (or processes) sharing it would have."""
    other = SqlRecordStore.from_url(record_store.engine.url.render_as_string(hide_password=False))
    yield record_store, other
    other.close()
