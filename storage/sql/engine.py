"""Engine factory: SQLite (WAL, foreign keys, busy timeout) and PostgreSQL through psycopg 3.

SQLite transactions are begun by us, not by the driver: pysqlite's own transaction handling
skips DDL and always starts deferred transactions, which fail with "database is locked" when a
reader later tries to write. Connections that will write ask for `BEGIN IMMEDIATE` through the
`WRITE` execution option, so they queue on `busy_timeout` instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.pool import StaticPool

from memsvc.errors import BackendUnavailable, Conflict

BUSY_TIMEOUT_MS = 30_000
SQLITE_MMAP_BYTES = 256 * 1024 * 1024  # address space, not memory: pages come from the OS cache
SQLITE_CACHE_KIB = 16 * 1024  # per connection

# Execution option asking for a write transaction (`BEGIN IMMEDIATE` on SQLite).
WRITE = "memsvc_write"

# SQLite function used for case-insensitive substring search (SQLite's own lower() is ASCII-only).
SQLITE_LOWER = "memsvc_lower"


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file (parent directories are created)."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def not_indexed(column: ColumnElement[str]) -> ColumnElement[str]:
    """`column` in a form no index serves (`column || ''`), for a condition beside a list of ids:
    the ids' own key must drive the lookup. Without table statistics SQLite otherwise picks an index
    that starts with `tenant` and scans every row of the tenant (measured: 20 ms per search at 100k
    memories instead of 1 ms). PostgreSQL plans both forms the same."""
    return column.concat("")


def normalize_url(url: str) -> str:
    """Route plain `postgresql://` / `postgres://` URLs to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for `sqlite:///path`, `sqlite://` (in-memory) or `postgresql+psycopg://...`."""
    url = normalize_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, in_memory=parsed.database in (None, "", ":memory:"), echo=echo)
    if backend == "postgresql":
        return create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, echo=echo
        )
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")


def dialect_insert(dialect_name: str, table: Table) -> Any:
    """`INSERT` with `ON CONFLICT` support (`on_conflict_do_nothing`/`_do_update`) for the dialect."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"no ON CONFLICT insert for dialect {dialect_name!r}")


def _sqlite_engine(url: str, *, in_memory: bool, echo: bool) -> Engine:
    kwargs: dict[str, Any] = {}
    if in_memory:
        # One shared connection, or every checkout would see its own empty database.
        kwargs["poolclass"] = StaticPool
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        echo=echo,
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver stays out of transactions; see _on_begin
        cursor = dbapi_conn.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Reads through a memory map and a larger page cache: a search loads its candidates by
            # primary key, scattered over the file (the default 2 MB cache re-reads them every time).
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()
        dbapi_conn.create_function(SQLITE_LOWER, 1, _lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Database errors as memsvc errors: integrity -> Conflict, connection/lock -> BackendUnavailable."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"the {what} write conflicts with stored data") from exc
    except (OperationalError, InterfaceError) as exc:
        raise BackendUnavailable(f"the {what} database is unavailable") from exc
