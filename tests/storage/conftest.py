"""Record-store fixtures: a SQLite file per test and the session's PostgreSQL database.

`postgres_url` and `reset_postgres` live in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.sql import SqlRecordStore, sqlite_url
from storage.sql.schema import metadata
from tests.conftest import reset_postgres

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)]


@pytest.fixture(params=BACKENDS)
def record_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of an empty database (no tables) of each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path_factory.mktemp("records") / "memsvc.db")
    return reset_postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=BACKENDS)
def record_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlRecordStore]:
    """A migrated `SqlRecordStore` with no rows, on each backend."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("records") / "memsvc.db")
    else:
        url = request.getfixturevalue("postgres_url")
    store = SqlRecordStore.from_url(url)
    store.migrate()  # a no-op on the session database after its first test
    if request.param != "sqlite":
        with store.engine.begin() as conn:  # DELETE: much faster than TRUNCATE on tiny tables
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
    yield store
    store.close()
