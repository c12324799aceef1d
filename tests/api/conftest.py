"""A real MemoryOS (embedded backends, real MiniLM) behind the app, driven through ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.auth import create_key
from memsvc.config import PostgresRecords, QdrantLocalVectors, Settings
from memsvc.memory_os import MemoryOS
from storage.registry import build_memory_os
from tests.conftest import reset_postgres


def make_settings(data_dir: Path, records: str = "sqlite", vectors: str = "qdrant-edge", pg_url: str | None = None) -> Settings:
    settings = Settings(data_dir=data_dir)
    if records == "postgresql":
        assert pg_url is not None
        settings = settings.model_copy(update={"records": PostgresRecords(url=pg_url)})
    if vectors == "qdrant-local":
        settings = settings.model_copy(update={"vectors": QdrantLocalVectors(path=data_dir / "qdrant-local")})
    return settings


@pytest.fixture(params=["embedded", pytest.param("postgresql+qdrant-client", marks=pytest.mark.service)])
def memory_os(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryOS]:
    """Embedded defaults (SQLite + Qdrant edge shard), and PostgreSQL + qdrant-client's code path."""
    if request.param == "embedded":
        settings = make_settings(tmp_path)
    else:
        url = reset_postgres(request.getfixturevalue("postgres_url"))
        settings = make_settings(tmp_path, records="postgresql", vectors="qdrant-local", pg_url=url)
    os_ = build_memory_os(settings)
    yield os_
    os_.close()


@pytest.fixture
def keys(memory_os: MemoryOS) -> dict[str, str]:
    """Plaintext keys: tenant A, tenant B, a read-only key of A, an admin key of A."""
    return {
        "a": create_key(memory_os.records, "tenant-a")[1],
        "b": create_key(memory_os.records, "tenant-b")[1],
        "a_ro": create_key(memory_os.records, "tenant-a", read_only=True)[1],
        "a_admin": create_key(memory_os.records, "tenant-a", admin=True)[1],
    }


ClientFactory = Callable[[str | None], httpx.AsyncClient]


@pytest.fixture
async def client(memory_os: MemoryOS) -> AsyncIterator[ClientFactory]:
    app = create_app(memory_os=memory_os)
    opened: list[httpx.AsyncClient] = []

    def make(key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://memsvc", headers=headers)
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.aclose()
