"""A started `MemoryOS` (its job runner running): on SQLite with the in-process queue, on
PostgreSQL, and on SQLite with the Redis queue (the consolidation jobs run on both runners)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memsvc.config import RedisJobs
from memsvc.memory_os import MemoryOS
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.conftest import reset_postgres
from tests.jobs.conftest import REDIS_URL, redis_or_skip

RUNNERS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.service), pytest.param("redis", marks=pytest.mark.service)]


def started(request: pytest.FixtureRequest, tmp_path: Path, **lifecycle: Any) -> Iterator[MemoryOS]:
    stream = None
    if request.param == "postgresql":
        url = reset_postgres(request.getfixturevalue("postgres_url"))
        settings = make_settings(tmp_path, records="postgresql", pg_url=url)
    else:
        settings = make_settings(tmp_path)
    if request.param == "redis":
        redis_or_skip()
        stream = f"memsvc-test:{uuid.uuid4().hex[:12]}"
        settings = settings.model_copy(update={"jobs": RedisJobs(url=REDIS_URL, stream=stream, workers=2)})
    if lifecycle:
        settings = settings.model_copy(update={"lifecycle": settings.lifecycle.model_copy(update=lifecycle)})
    os_ = build_memory_os(settings)
    yield os_
    os_.close()
    if stream is not None:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(stream)


@pytest.fixture(params=RUNNERS)
def memory_os(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryOS]:
    yield from started(request, tmp_path)


@pytest.fixture(params=RUNNERS)
def sweeping_os(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryOS]:
    """The consolidation sweep scheduled every 0.3 s, an open episode idle at once."""
    yield from started(request, tmp_path, interval_s=0.3, idle_s=0.0)
