"""Migrations after 0001 upgrade a database that holds rows, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import insert

from memsvc.models import ApiKey, utcnow
from storage.sql import SqlRecordStore
from storage.sql import schema as t
from storage.sql.migrations import alembic_config

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_upgrade_from_0001_keeps_keys_and_adds_expiry(record_url: str) -> None:
    store = SqlRecordStore.from_url(record_url)
    try:
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(connection=conn), "0001")
            row = ApiKey(tenant="acme", key_hash="h1", prefix="msk_old").model_dump(exclude={"expires_at"})
            conn.execute(insert(t.api_keys).values(**row))  # the 0001 columns only
        store.migrate()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [HEAD]
        key = store.key_by_hash("h1")
        assert key is not None and key.expires_at is None and key.usable()
        soon = utcnow() + timedelta(minutes=5)
        store.update_key(key.model_copy(update={"expires_at": soon}))
        again = store.key_by_hash("h1")
        assert again is not None and again.expires_at == soon
        assert not again.usable(soon) and again.usable(soon - timedelta(seconds=1))
        store.update_key(again.model_copy(update={"revoked": True}))
        assert [(k.prefix, k.revoked) for k in store.list_keys("acme")] == [("msk_old", True)]
        assert store.list_keys("other") == []
    finally:
        store.close()
