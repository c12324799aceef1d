"""Migrations after 0001 upgrade a database that holds rows, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select

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


def test_upgrade_to_0007_copies_the_episode_and_turn_of_existing_memories(record_url: str) -> None:
    """0007 adds indexed `episode` / `turn` columns; memories written before it are found by the
    structure lookups afterwards, as their metadata's positions are copied into the columns."""
    from memsvc.models import EPISODE_KEY, TURN_KEY, MemoryCube, MemoryType
    from storage.sql.unit_of_work import _cube_row

    store = SqlRecordStore.from_url(record_url)
    try:
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(connection=conn), "0006")
            for i in range(5):
                cube = MemoryCube(id=f"m{i}", tenant="acme", user_id="alice", type=MemoryType.EPISODIC,
                                  content=f"turn {i}", metadata={EPISODE_KEY: i // 3, TURN_KEY: i, "topic": "x"})
                row = {k: v for k, v in _cube_row(cube).items() if k not in ("episode", "turn")}  # 0006 columns
                conn.execute(insert(t.memories).values(**row))
            fact = MemoryCube(id="f1", tenant="acme", user_id="alice", type=MemoryType.SEMANTIC, content="a fact")
            conn.execute(insert(t.memories).values(
                **{k: v for k, v in _cube_row(fact).items() if k not in ("episode", "turn")}))
        store.migrate()
        assert [c.id for c in store.episode_turns("acme", "alice", [1])] == ["m3", "m4"]
        assert [c.id for c in store.adjacent_turns("acme", "alice", 2, 1)] == ["m1", "m2", "m3"]
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.memories.c.id, t.memories.c.episode, t.memories.c.turn)
                                .order_by(t.memories.c.id)).all()
        assert [tuple(r) for r in rows] == [("f1", None, None), ("m0", 0, 0), ("m1", 0, 1), ("m2", 0, 2),
                                            ("m3", 1, 3), ("m4", 1, 4)]
    finally:
        store.close()
