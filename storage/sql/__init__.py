"""SQLAlchemy record store (SQLite by default, PostgreSQL through psycopg 3)."""

from storage.sql.engine import make_engine, sqlite_url
from storage.sql.records import SqlRecordStore
from storage.sql.unit_of_work import SqlUnitOfWork

__all__ = ["SqlRecordStore", "SqlUnitOfWork", "make_engine", "sqlite_url"]
