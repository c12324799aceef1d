"""What both vector backends share: payload encoding, a neutral filter tree, the BM25 encoder.

The filter tree (`Cond`) is built once from a `VectorFilter` and translated by each backend
into its own filter classes, so the two backends cannot drift apart in what a filter means.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import qdrant_edge as qe

from memsvc.errors import BackendUnavailable, InvalidInput
from memsvc.models import as_utc
from memsvc.ports import PointState, VectorFilter, VectorPayload

DENSE = "dense"
SPARSE = "bm25"
DIGEST = "digest"  # payload key of `VectorPayload.digest`
FETCH_BATCH = 1000  # points per retrieve when reading vectors back

# Keyword fields with a payload index; the first is the tenant key.
KEYWORD_FIELDS = ("tenant", "user_id", "type", "status", "agent_id", "session_id")
# Datetimes are stored as float epoch seconds so that plain numeric ranges filter them.
TIME_FIELDS = ("created_at", "event_time", "valid_from", "valid_to")

# Memory texts are short facts, not web pages: BM25's length normalisation is relative
# to this average (in tokens after stop-word removal), not to qdrant's default of 256.
BM25_AVG_LEN = 32.0

# Numbers whose exact match goes through a float range are exact up to 2**53.
_EXACT_FLOAT_INT = 2**53
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- payload


def epoch(value: datetime) -> float:
    """Seconds since the epoch; naive datetimes are taken as UTC."""
    aware = as_utc(value)
    assert aware is not None
    return aware.timestamp()


def encode_payload(payload: VectorPayload) -> dict[str, Any]:
    """The stored payload: keywords, times as epoch floats, metadata as a nested object.

    Absent optional fields are left out (filters treat missing and null alike).
    """
    out: dict[str, Any] = {
        "tenant": payload.tenant,
        "user_id": payload.user_id,
        "type": str(payload.type.value),
        "status": str(payload.status.value),
        "created_at": epoch(payload.created_at),
    }
    if payload.agent_id is not None:
        out["agent_id"] = payload.agent_id
    if payload.session_id is not None:
        out["session_id"] = payload.session_id
    for name in ("event_time", "valid_from", "valid_to"):
        value = getattr(payload, name)
        if value is not None:
            out[name] = epoch(value)
    out["metadata"] = _encode_value(dict(payload.metadata))
    if payload.digest is not None:
        out[DIGEST] = payload.digest
    return out


def _encode_value(value: Any) -> Any:
    # Booleans are stored as 0/1: qdrant-edge 0.9 turns MatchValue(True) into the integer 1,
    # so a stored JSON `true` could never be matched there. Storing ints on both backends
    # keeps them in agreement, and matches Python, where True == 1.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf and the engine rejects them
    if isinstance(value, dict):
        return {str(k): _encode_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, datetime):
        return epoch(value)
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def stored_vector(point_id: Any, payload: dict[str, Any] | None, vector: Any) -> tuple[str, tuple[str | None, np.ndarray]]:
    """(id, (digest, dense vector)) of a point retrieved with its `DIGEST` payload and `DENSE` vector."""
    digest = (payload or {}).get(DIGEST)
    dense_vector = vector[DENSE] if isinstance(vector, dict) else vector
    return str(point_id), (digest if isinstance(digest, str) else None, np.asarray(dense_vector, dtype=np.float32))


def point_state(point_id: Any, payload: dict[str, Any] | None) -> PointState:
    payload = payload or {}
    digest = payload.get(DIGEST)
    return PointState(str(point_id), str(payload.get("tenant", "")), str(payload.get("user_id", "")),
                      str(payload.get("status", "")), digest if isinstance(digest, str) else None)


# --------------------------------------------------------------------------- filter tree


@dataclass(frozen=True)
class Match:
    key: str
    value: str | int


@dataclass(frozen=True)
class MatchAny:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class IsEmpty:
    """The field is missing, null or an empty list."""

    key: str


@dataclass(frozen=True)
class HasId:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one condition holds (qdrant `should`)."""

    conditions: tuple[Cond, ...]


@dataclass(frozen=True)
class AllOf:
    """Every condition holds (qdrant `must`)."""

    conditions: tuple[Cond, ...]


Cond = Match | MatchAny | Range | IsEmpty | HasId | AnyOf | AllOf


def matches_nothing(flt: VectorFilter) -> bool:
    """An empty `ids`, `types` or `statuses` list can match no point."""
    return any(v is not None and len(v) == 0 for v in (flt.ids, flt.types, flt.statuses))


def scope_condition(tenant: str, user_id: str | None = None) -> AllOf:
    conds: list[Cond] = [Match("tenant", tenant)]
    if user_id is not None:
        conds.append(Match("user_id", user_id))
    return AllOf(tuple(conds))


def build_condition(flt: VectorFilter) -> AllOf:
    """The neutral condition tree for a `VectorFilter` (all given conditions must hold)."""
    conds: list[Cond] = list(scope_condition(flt.tenant, flt.user_id).conditions)
    if flt.types is not None:
        conds.append(_any_keyword("type", [str(t.value) for t in flt.types]))
    if flt.statuses is not None:
        conds.append(_any_keyword("status", [str(s.value) for s in flt.statuses]))
    if flt.agent_id is not None:
        conds.append(Match("agent_id", flt.agent_id))
    if flt.session_id is not None:
        conds.append(Match("session_id", flt.session_id))
    if flt.valid_at is not None:
        t = epoch(flt.valid_at)  # valid time only: back-filled history is true as of its own dates
        conds.append(AnyOf((IsEmpty("valid_from"), Range("valid_from", lte=t))))
        conds.append(AnyOf((IsEmpty("valid_to"), Range("valid_to", gt=t))))
    if flt.event_from is not None or flt.event_to is not None:
        # One range on the field: points without an event_time never satisfy it.
        conds.append(
            Range(
                "event_time",
                gte=epoch(flt.event_from) if flt.event_from is not None else None,
                lt=epoch(flt.event_to) if flt.event_to is not None else None,
            )
        )
    for key, value in (flt.metadata or {}).items():
        conds.append(_metadata_condition(key, value))
    if flt.ids is not None:
        conds.append(HasId(tuple(str(i) for i in flt.ids)))
    return AllOf(tuple(conds))


def _any_keyword(key: str, values: Sequence[str]) -> Cond:
    unique = tuple(dict.fromkeys(values))
    return Match(key, unique[0]) if len(unique) == 1 else MatchAny(key, unique)


def metadata_path(key: str) -> str:
    """JSON path of a top-level metadata key; keys with dots or spaces are quoted."""
    if _PLAIN_KEY.match(key):
        return f"metadata.{key}"
    if '"' in key:
        raise InvalidInput(f"metadata filter key may not contain a double quote: {key!r}")
    return f'metadata."{key}"'


def _metadata_condition(key: str, value: str | int | float | bool) -> Cond:
    path = metadata_path(key)
    if isinstance(value, str):
        return Match(path, value)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and abs(value) >= _EXACT_FLOAT_INT:
        return Match(path, value)
    if isinstance(value, int | float) and math.isfinite(value):
        # A range, not a keyword match: it finds 2 stored as 2.0 as well, like Python's ==.
        return Range(path, gte=float(value), lte=float(value))
    raise InvalidInput(f"metadata filter value must be a string, number or boolean: {key!r}")


# --------------------------------------------------------------------------- BM25


_bm25: qe.Bm25 | None = None
_bm25_lock = threading.Lock()


def bm25_config() -> qe.Bm25Config:
    """English word tokens, lowercased and accent-folded, stop words removed, Snowball stems."""
    return qe.Bm25Config(
        k=1.2,
        b=0.75,
        avg_len=BM25_AVG_LEN,
        tokenizer=qe.TokenizerType.Word,
        language="english",
        lowercase=True,
        ascii_folding=True,
        stopwords=qe.Language.English,
        stemmer=qe.SnowballParams(qe.SnowballLanguage.English),
    )


def bm25() -> qe.Bm25:
    """The one BM25 encoder, shared by both backends so that keyword rankings agree."""
    global _bm25
    if _bm25 is None:
        with _bm25_lock:
            if _bm25 is None:
                _bm25 = qe.Bm25(bm25_config())
    return _bm25


def embed_document(text: str) -> tuple[list[int], list[float]]:
    """Term-frequency weights of a document; IDF is applied by the engine at query time."""
    sv = bm25().embed_document(text)
    return list(sv.indices), list(sv.values)


def embed_query(text: str) -> tuple[list[int], list[float]]:
    """One weight per distinct query term; empty when the text has no indexable token."""
    sv = bm25().embed_query(text)
    return list(sv.indices), list(sv.values)


def dense(vector: Sequence[float], dim: int) -> list[float]:
    values: list[float] = np.asarray(vector, dtype=np.float32).ravel().tolist()
    if len(values) != dim:
        raise InvalidInput(f"vector has dimension {len(values)}, the index expects {dim}")
    return values


def ranked(hits: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Best first; equal scores by id, so that both backends order ties alike."""
    return sorted(hits, key=lambda hit: (-hit[1], hit[0]))


# --------------------------------------------------------------------------- closing


class Gate:
    """Lets any number of calls run at once, and `close` wait for them and bar new ones."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self._exclusive = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def enter(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive and not self._closed:
                self._cond.wait()
            if self._closed:
                raise BackendUnavailable(f"{self._name} is closed")
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Wait for running calls, hold new ones back (they wait, they do not fail) and run alone."""
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def close(self) -> bool:
        """Bar new calls and wait for running ones; False when it was already closed."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            while self._active:
                self._cond.wait()
            return True
