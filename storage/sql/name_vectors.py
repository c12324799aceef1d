"""A scope's embeddings of short texts in SQL (`name_vectors`): what `GraphService` reads back instead
of embedding the scope's entity names again after a restart or after the scope left its in-process
cache, and what a retention sweep reads back instead of embedding the scope's memories with the
retention model's second embedder again (model `retention:<embedder>`, the text a memory's content).
Rows hold a hash of model and text and the vector, never the text; `purge_user` deletes a scope's
rows with its other rows."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import Engine, select

from storage.sql import schema as t
from storage.sql.engine import WRITE, dialect_insert

CHUNK = 500  # keys per IN (...) list


def name_key(model: str, name: str) -> str:
    return hashlib.sha256(f"{model}\x00{name}".encode()).hexdigest()


class SqlNameVectors:
    """`get` and `put` float32 vectors of a scope's names by embedder model; a name stored once keeps
    its first vector (the same model embeds the same name to the same vector, up to rounding)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE: True})

    def get(self, tenant: str, user_id: str, model: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        keys = {name_key(model, n): n for n in dict.fromkeys(names)}
        nv = t.name_vectors
        out: dict[str, np.ndarray] = {}
        todo = list(keys)
        with self._engine.connect() as conn:
            for i in range(0, len(todo), CHUNK):
                rows = conn.execute(select(nv.c.key, nv.c.vector).where(
                    nv.c.tenant == tenant, nv.c.user_id == user_id, nv.c.key.in_(todo[i:i + CHUNK])))
                for key, blob in rows:
                    out[keys[key]] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return out

    def put(self, tenant: str, user_id: str, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        rows = [{"tenant": tenant, "user_id": user_id, "key": name_key(model, n),
                 "vector": np.asarray(v, dtype="<f4").tobytes()} for n, v in vectors.items()]
        if not rows:
            return
        with self._writer.begin() as conn:
            conn.execute(dialect_insert(conn.dialect.name, t.name_vectors).on_conflict_do_nothing(), rows)
