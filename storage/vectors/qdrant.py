"""`VectorIndex` over `qdrant_client.QdrantClient`: a Qdrant server or cluster, or local mode.

The collection mirrors the edge shard: dense "dense" (cosine) and sparse "bm25" with the IDF
modifier, encoded by the same BM25 model as the edge backend so keyword rankings agree.
Local mode (`QdrantVectorIndex.local`) is qdrant-client's pure-Python brute-force engine,
meant for tests and tiny deployments; it is not thread-safe, so its calls are serialised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from memsvc.errors import InvalidInput
from memsvc.ports import PointState, VectorFilter, VectorPayload, VectorPoint
from storage.vectors import common as c

UPSERT_BATCH = 256
_STATE_FIELDS = ["tenant", "user_id", "status", c.DIGEST]


class QdrantVectorIndex:
    """Dense + BM25 search over one collection of a Qdrant server (or of local mode).

    The index owns `client` and closes it in `close()`. Set `serialize` when the client is
    not safe to share between threads (local mode); `payload_indexes=False` skips index
    creation where it has no effect (local mode, which warns about it).
    """

    def __init__(
        self, client: QdrantClient, collection: str, dim: int, *,
        serialize: bool = False, payload_indexes: bool = True,
    ) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self._lock: threading.Lock | None = threading.Lock() if serialize else None
        self._gate = c.Gate(f"vector collection {collection!r}")
        self._ensure_collection(payload_indexes)

    @classmethod
    def from_url(cls, url: str, api_key: str | None, collection: str, dim: int) -> QdrantVectorIndex:
        """A Qdrant server or cluster (the scale-out backend)."""
        return cls(QdrantClient(url=url, api_key=api_key), collection, dim)

    @classmethod
    def local(cls, path: Path | None, collection: str, dim: int) -> QdrantVectorIndex:
        """qdrant-client's local mode, in a directory or (path None) in memory."""
        if path is None:
            client = QdrantClient(location=":memory:")
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            # Calls are serialised by the index, so the SQLite handle may cross threads.
            client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
        return cls(client, collection, dim, serialize=True, payload_indexes=False)

    # ------------------------------------------------------------------ writes

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [self._point(p) for p in points[start:start + UPSERT_BATCH]]
            with self._call():
                self.client.upsert(self.collection, points=batch, wait=True)

    def set_payload(self, items: Sequence[tuple[str, VectorPayload]]) -> None:
        if not items:
            return
        # By filter, one operation per point: an id list fails on a missing id.
        operations: list[models.UpdateOperation] = [
            models.OverwritePayloadOperation(
                overwrite_payload=models.SetPayload(
                    payload=c.encode_payload(payload), filter=_filter(c.AllOf((c.HasId((point_id,)),)))
                )
            )
            for point_id, payload in items
        ]
        with self._call():
            self.client.batch_update_points(self.collection, operations, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._call():
            self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def delete_scope(self, tenant: str, user_id: str) -> None:
        selector = models.FilterSelector(filter=_filter(c.scope_condition(tenant, user_id)))
        with self._call():
            self.client.delete(self.collection, points_selector=selector, wait=True)

    # ------------------------------------------------------------------ reads

    def search(self, vector: Sequence[float], flt: VectorFilter, limit: int) -> list[tuple[str, float]]:
        if limit <= 0 or c.matches_nothing(flt):
            return []
        query = c.dense(vector, self.dim)
        with self._call():
            response = self.client.query_points(
                self.collection, query=query, using=c.DENSE, query_filter=_filter(c.build_condition(flt)),
                limit=limit, with_payload=False, with_vectors=False,
            )
        return c.ranked([(str(p.id), float(p.score)) for p in response.points])

    def search_text(self, text: str, flt: VectorFilter, limit: int) -> list[tuple[str, float]]:
        indices, values = c.embed_query(text)
        if not indices or limit <= 0 or c.matches_nothing(flt):
            return []
        # IDF over the scope's own points: another tenant's texts never shift the ranking.
        idf = models.IdfCorpusParams(corpus=_filter(c.scope_condition(flt.tenant, flt.user_id)))
        with self._call():
            response = self.client.query_points(
                self.collection,
                query=models.SparseVector(indices=indices, values=values),
                using=c.SPARSE,
                query_filter=_filter(c.build_condition(flt)),
                search_params=models.SearchParams(idf=idf),
                limit=limit, with_payload=False, with_vectors=False,
            )
        return c.ranked([(str(p.id), float(p.score)) for p in response.points if p.score > 0])

    def count(self, flt: VectorFilter) -> int:
        if c.matches_nothing(flt):
            return 0
        with self._call():
            result = self.client.count(self.collection, count_filter=_filter(c.build_condition(flt)), exact=True)
        return int(result.count)

    def scan(self, flt: VectorFilter, limit: int, cursor: str | None = None) -> tuple[list[PointState], str | None]:
        if c.matches_nothing(flt):
            return [], None
        with self._call():
            records, after = self.client.scroll(
                self.collection, scroll_filter=_filter(c.build_condition(flt)), limit=limit, offset=cursor,
                with_payload=_STATE_FIELDS, with_vectors=False,
            )
        return [c.point_state(r.id, r.payload) for r in records], (str(after) if after is not None else None)

    def states(self, ids: Sequence[str]) -> dict[str, PointState]:
        if not ids:
            return {}
        with self._call():
            records = self.client.retrieve(self.collection, list(dict.fromkeys(ids)), with_payload=_STATE_FIELDS,
                                           with_vectors=False)
        return {str(r.id): c.point_state(r.id, r.payload) for r in records}

    def vectors(self, ids: Sequence[str]) -> dict[str, tuple[str | None, np.ndarray]]:
        out: dict[str, tuple[str | None, np.ndarray]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), c.FETCH_BATCH):
            with self._call():
                records = self.client.retrieve(self.collection, unique[start:start + c.FETCH_BATCH],
                                               with_payload=[c.DIGEST], with_vectors=[c.DENSE])
            out.update(c.stored_vector(r.id, r.payload, r.vector) for r in records)
        return out

    # ------------------------------------------------------------------ lifecycle

    def compact(self) -> None:
        """Nothing to do: a Qdrant server's vacuum optimiser rewrites segments with deleted points
        itself, and the local mode keeps no deleted rows."""

    def flush(self) -> None:
        """Nothing to do: writes are acknowledged once applied (`wait=True`)."""

    def close(self) -> None:
        if self._gate.close():
            with self._lock or nullcontext():
                self.client.close()

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _call(self) -> Iterator[None]:
        with self._gate.enter(), self._lock or nullcontext():
            yield

    def _point(self, p: VectorPoint) -> models.PointStruct:
        vectors: dict[str, Any] = {c.DENSE: c.dense(p.vector, self.dim)}
        indices, values = c.embed_document(p.text)
        if indices:  # a point without tokens stays out of the BM25 corpus
            vectors[c.SPARSE] = models.SparseVector(indices=indices, values=values)
        return models.PointStruct(id=p.id, vector=vectors, payload=c.encode_payload(p.payload))

    def _ensure_collection(self, payload_indexes: bool) -> None:
        with self._call():
            if self.client.collection_exists(self.collection):
                self._check_dim()
                return
            self.client.create_collection(
                self.collection,
                vectors_config={c.DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)},
                sparse_vectors_config={c.SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            if payload_indexes:
                for name, schema in _payload_indexes().items():
                    self.client.create_payload_index(self.collection, name, field_schema=schema, wait=True)

    def _check_dim(self) -> None:
        params = self.client.get_collection(self.collection).config.params.vectors
        dense = params.get(c.DENSE) if isinstance(params, dict) else None
        if dense is None or dense.size != self.dim:
            found = dense.size if dense is not None else "no"
            raise InvalidInput(
                f"collection {self.collection!r} has {found} {c.DENSE!r} vectors, expected size {self.dim}"
            )


def _payload_indexes() -> dict[str, models.KeywordIndexParams | models.FloatIndexParams]:
    keyword = models.KeywordIndexType.KEYWORD
    return {
        "tenant": models.KeywordIndexParams(type=keyword, is_tenant=True),
        "user_id": models.KeywordIndexParams(type=keyword),
        **{
            name: models.KeywordIndexParams(type=keyword, enable_hnsw=False)
            for name in ("type", "status", "agent_id", "session_id")
        },
        **{name: models.FloatIndexParams(type=models.FloatIndexType.FLOAT, enable_hnsw=False) for name in c.TIME_FIELDS},
    }


def _filter(cond: c.AllOf) -> models.Filter:
    return models.Filter(must=[_condition(x) for x in cond.conditions])


def _condition(cond: c.Cond) -> models.Condition:
    match cond:
        case c.Match(key, value):
            return models.FieldCondition(key=key, match=models.MatchValue(value=value))
        case c.MatchAny(key, values):
            return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
        case c.Range(key, gte, gt, lte, lt):
            return models.FieldCondition(key=key, range=models.Range(gte=gte, gt=gt, lte=lte, lt=lt))
        case c.IsEmpty(key):
            return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
        case c.HasId(ids):
            return models.HasIdCondition(has_id=list(ids))
        case c.AnyOf(conditions):
            return models.Filter(should=[_condition(x) for x in conditions])
        case c.AllOf(conditions):
            return models.Filter(must=[_condition(x) for x in conditions])
    raise TypeError(f"unknown condition {cond!r}")
