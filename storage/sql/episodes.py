"""Episode rows, the structure queries of recall (turns of an episode, temporal neighbours) and the
lifecycle counts the admin page and `/metrics` show. Mixed into `SqlRecordStore`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, update
from sqlalchemy.engine import Connection

from memsvc.errors import Conflict
from memsvc.models import (
    Episode,
    EpisodeState,
    Job,
    MemoryCube,
    MemoryStatus,
    MemoryType,
    utcnow,
)
from storage.sql import schema as t
from storage.sql.engine import dialect_insert

_EPISODE_COLUMNS = ("session_id", "started_at", "ended_at", "turns", "closed_at", "boundary", "updated_at")


class EpisodeRows:
    """Episode and lifecycle methods of `SqlRecordStore` (mixed in; it provides the connections)."""

    _engine: Engine

    def _read(self) -> AbstractContextManager[Connection]: ...  # provided by the store

    def episode_state(self, tenant: str, user_id: str) -> EpisodeState | None:
        s = t.episode_state
        with self._read() as conn:
            row = conn.execute(select(s).where(s.c.tenant == tenant, s.c.user_id == user_id)).first()
        return EpisodeState.model_validate(row._mapping) if row is not None else None

    def episodes(self, tenant: str, user_id: str, numbers: Sequence[int] | None = None) -> list[Episode]:
        e = t.episodes
        stmt = select(e).where(e.c.tenant == tenant, e.c.user_id == user_id).order_by(e.c.episode)
        if numbers is not None:
            stmt = stmt.where(e.c.episode.in_(list(numbers)))
        with self._read() as conn:
            return [Episode.model_validate(r._mapping) for r in conn.execute(stmt)]

    def undigested_episodes(self, idle_before: datetime, limit: int = 500, *,
                            scope: tuple[str, str] | None = None) -> list[Episode]:
        e = t.episodes
        # `digest_turns != turns` as the partial indexes state it, so both queries walk only those
        stmt = select(e).where(e.c.digest_turns != e.c.turns,
                               or_(e.c.closed_at.is_not(None), e.c.updated_at < idle_before))
        if scope is None:
            stmt = stmt.order_by(e.c.updated_at, e.c.tenant, e.c.user_id, e.c.episode)
        else:
            stmt = stmt.where(e.c.tenant == scope[0], e.c.user_id == scope[1]).order_by(e.c.episode)
        stmt = stmt.limit(limit)
        with self._read() as conn:
            return [Episode.model_validate(r._mapping) for r in conn.execute(stmt)]

    def _turns(self, tenant: str, user_id: str, where: ColumnElement[bool]) -> list[MemoryCube]:
        m = t.memories
        stmt = select(m).where(
            m.c.tenant == tenant, m.c.user_id == user_id, m.c.type == MemoryType.EPISODIC.value,
            m.c.status == MemoryStatus.ACTIVE.value, where,
        ).order_by(m.c.turn, m.c.id)
        with self._read() as conn:
            return [MemoryCube.model_validate(r._mapping) for r in conn.execute(stmt)]

    def episode_turns(self, tenant: str, user_id: str, episodes: Sequence[int]) -> list[MemoryCube]:
        if not episodes:
            return []
        m = t.memories
        return self._turns(tenant, user_id, m.c.episode.in_(list(episodes)))

    def adjacent_turns(self, tenant: str, user_id: str, turn: int, k: int) -> list[MemoryCube]:
        m = t.memories
        return self._turns(tenant, user_id, m.c.turn.between(turn - k, turn + k))

    def status_counts(self, tenant: str | None = None) -> dict[str, int]:
        m = t.memories
        stmt = select(m.c.status, func.count()).group_by(m.c.status)
        if tenant is not None:
            stmt = stmt.where(m.c.tenant == tenant)
        with self._read() as conn:
            found = {str(status): int(n) for status, n in conn.execute(stmt)}
        return {s.value: found.get(s.value, 0) for s in MemoryStatus}

    def job_counts(self, tenant: str | None = None) -> list[tuple[str, str, int]]:
        j = t.jobs
        stmt = select(j.c.kind, j.c.state, func.count()).group_by(j.c.kind, j.c.state).order_by(j.c.kind, j.c.state)
        if tenant is not None:
            stmt = stmt.where(j.c.tenant == tenant)
        with self._read() as conn:
            return [(str(k), str(s), int(n)) for k, s, n in conn.execute(stmt)]

    def recent_jobs(self, tenant: str | None = None, *, kinds: Sequence[str] | None = None, limit: int = 50) -> list[Job]:
        j = t.jobs
        stmt = select(j).order_by(j.c.updated_at.desc(), j.c.id).limit(limit)
        if tenant is not None:
            stmt = stmt.where(j.c.tenant == tenant)
        if kinds is not None:
            stmt = stmt.where(j.c.kind.in_(list(kinds)))
        with self._read() as conn:
            return [Job.model_validate(r._mapping) for r in conn.execute(stmt)]


# -- staged by the unit of work ---------------------------------------------------------------


def state_row(state: EpisodeState) -> dict[str, Any]:
    return state.model_dump()


def save_episodes(state: dict[str, Any], rows: list[dict[str, Any]], conn: Connection) -> None:
    s, e = t.episode_state, t.episodes
    stmt = dialect_insert(conn.dialect.name, s).values(**state)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[s.c.tenant, s.c.user_id],
        set_={c: stmt.excluded[c] for c in state if c not in ("tenant", "user_id")},
    ))
    for row in rows:
        ins = dialect_insert(conn.dialect.name, e).values(**row, digest_turns=0)
        conn.execute(ins.on_conflict_do_update(
            index_elements=[e.c.tenant, e.c.user_id, e.c.episode],
            set_={c: ins.excluded[c] for c in _EPISODE_COLUMNS},
        ))


def mark_digested(tenant: str, user_id: str, episode: int, turns: int, digest_id: str | None, expected: int,
                  conn: Connection) -> None:
    e = t.episodes
    mine = and_(e.c.tenant == tenant, e.c.user_id == user_id, e.c.episode == episode, e.c.digest_turns == expected)
    if conn.execute(update(e).where(mine).values(digest_turns=turns, digest_id=digest_id)).rowcount != 1:
        raise Conflict(f"episode {episode} was digested by another run")


def episode_row(ep: Episode) -> dict[str, Any]:
    return {"tenant": ep.tenant, "user_id": ep.user_id, "episode": ep.episode,
            **{c: getattr(ep, c) for c in _EPISODE_COLUMNS}, "updated_at": utcnow()}


__all__ = ["EpisodeRows", "episode_row", "mark_digested", "save_episodes", "state_row"]
