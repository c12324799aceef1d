"""Record-store fixtures: a SQLite file per test and a throwaway PostgreSQL database per session.

PostgreSQL: `MEMSVC_TEST_POSTGRES_URL` (default postgresql+psycopg://root@127.0.0.1:5432/test)
names a database to connect to; the session creates `memsvc_test_<hex>` beside it and drops it
at the end. When the server is unreachable the PostgreSQL cases are skipped, or fail when `CI`
is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from storage.sql import SqlRecordStore, sqlite_url
from storage.sql.engine import normalize_url
from storage.sql.schema import metadata

DEFAULT_POSTGRES_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database that lives for the test session."""
    admin_url = make_url(normalize_url(os.environ.get("MEMSVC_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)))
    name = f"memsvc_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = (
            f"PostgreSQL unreachable at {admin_url.render_as_string(hide_password=True)} "
            f"(set MEMSVC_TEST_POSTGRES_URL): {exc.orig}"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)]


@pytest.fixture(params=BACKENDS)
def record_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of an empty database (no tables) of each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path_factory.mktemp("records") / "memsvc.db")
    url: str = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return url


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
