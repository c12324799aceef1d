"""A started `MemoryOS` (its job runner running) on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memsvc.memory_os import MemoryOS
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.conftest import reset_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def memory_os(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryOS]:
    if request.param == "sqlite":
        settings = make_settings(tmp_path)
    else:
        url = reset_postgres(request.getfixturevalue("postgres_url"))
        settings = make_settings(tmp_path, records="postgresql", pg_url=url)
    os_ = build_memory_os(settings)
    yield os_
    os_.close()
