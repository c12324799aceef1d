"""`memsvc gates serve`: the gate model as a worker of its own (e.g. on a GPU host), shared by API
nodes configured with `MEMSVC_GATES__KIND=remote`. JSON over HTTP; every call is one batch."""

from __future__ import annotations

import hmac
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field

from api import errors
from memsvc.errors import InvalidInput, Unauthenticated
from memsvc.learn.features import RERANK_FEATURES, ROUTE_FEATURES, WRITE_GATE_FEATURES
from memsvc.ports import GateModel

MAX_ROWS = 20_000
MAX_TEXTS = 512  # texts per cross-encoder call (a read path sends its first stage's top `cross_depth`)
MAX_TEXT_CHARS = 20_000  # each is cut to the model's 128 tokens anyway


class RerankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lists: list[list[list[float]]] = Field(description="candidate lists; rows of RERANK_FEATURES")


class CrossBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    texts: list[str] = Field(max_length=MAX_TEXTS, description="memories as `memsvc.learn.cross.memory_text` writes them")


class RowsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embeddings: list[list[float]]
    side: list[list[float]]


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embeddings: list[list[float]] = Field(description="query embeddings, one per row")


def _matrix(rows: list[list[float]], width: int | None, what: str) -> np.ndarray:
    """`rows` as a float32 matrix of `width` columns (any width when None; an empty batch is a (0, width)
    matrix); ragged, mis-sized, oversized or non-finite input is refused by name, never a 500."""
    if len(rows) > MAX_ROWS:
        raise InvalidInput(f"{what}: at most {MAX_ROWS} rows per call")
    if not rows:
        return np.zeros((0, width or 0), dtype=np.float32)
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InvalidInput(f"{what}: every row needs the same number of columns (got {sorted(widths)})")
    got = widths.pop()
    if width is not None and got != width:
        raise InvalidInput(f"{what}: expected {width} columns, got {got}")
    x = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InvalidInput(f"{what}: every value must be a finite number")
    return x


def _dim(info: dict[str, Any], head: str) -> int | None:
    """The embedding width a head of the loaded artefact reads (None: it does not say)."""
    spec = info.get("specs", {}).get(head)
    return int(spec["dim"]) if isinstance(spec, dict) and "dim" in spec else None


def create_gates_app(model: GateModel, token: str | None = None) -> FastAPI:
    """The worker's app. With a `token`, every route but `/healthz` asks for `Authorization: Bearer
    <token>` (the API nodes' `MEMSVC_GATES__TOKEN`) and answers 401 without it."""

    def authorised(authorization: str | None = Header(None, include_in_schema=False)) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthenticated("missing or invalid gate worker token (MEMSVC_GATES__TOKEN)")

    auth = [Depends(authorised)]
    app = FastAPI(title="memsvc gates", version="0.1.0",
                  description="The learned gate heads (reranker with its query adapter and second-embedder projection, "
                              "cross-encoder stage, write gate, router) as a shared worker.")
    errors.install(app)
    info = model.describe()
    dims = {h: _dim(info, h) for h in ("query", "second", "write", "route")}  # the embedding width each head reads

    @app.get("/v1/gates", dependencies=auth)
    def describe() -> dict[str, Any]:
        return model.describe()

    @app.post("/v1/gates/rerank", dependencies=auth)
    def rerank(body: RerankBody) -> dict[str, Any]:
        if not model.has("rerank"):
            raise InvalidInput("the loaded artefact has no rerank head")
        if sum(len(x) for x in body.lists) > MAX_ROWS:
            raise InvalidInput(f"lists: at most {MAX_ROWS} candidates per call, over all lists")
        lists = [_matrix(x, len(RERANK_FEATURES), "lists") for x in body.lists]
        return {"scores": [s.tolist() for s in model.rerank(lists)]}

    @app.post("/v1/gates/cross", dependencies=auth)
    def cross(body: CrossBody) -> dict[str, Any]:
        if not model.has("cross"):
            raise InvalidInput("this worker has no cross-encoder stage loaded")
        if any(len(t) > MAX_TEXT_CHARS for t in body.texts):
            raise InvalidInput(f"texts: each at most {MAX_TEXT_CHARS} characters")
        return {"scores": model.cross(body.query, body.texts).tolist() if body.texts else []}

    @app.post("/v1/gates/query", dependencies=auth)
    def query(body: QueryBody) -> dict[str, Any]:
        if not model.has("query"):
            raise InvalidInput("the loaded artefact has no query adapter")
        q = _matrix(body.embeddings, dims["query"], "embeddings")
        return {"q": model.adapt(q).tolist() if len(q) else []}

    @app.post("/v1/gates/second", dependencies=auth)
    def second(body: QueryBody) -> dict[str, Any]:
        if not model.has("second"):
            raise InvalidInput("the loaded artefact has no second-embedder projection")
        q = _matrix(body.embeddings, dims["second"], "embeddings")
        return {"q": model.project(q).tolist() if len(q) else []}

    def _rows(body: RowsBody, head: str, side_width: int) -> tuple[np.ndarray, np.ndarray]:
        emb = _matrix(body.embeddings, dims[head], "embeddings")
        side = _matrix(body.side, side_width, "side")
        if len(emb) != len(side):
            raise InvalidInput("embeddings and side need the same number of rows")
        return emb, side

    @app.post("/v1/gates/write", dependencies=auth)
    def write(body: RowsBody) -> dict[str, Any]:
        if not model.has("write"):
            raise InvalidInput("the loaded artefact has no write head")
        emb, side = _rows(body, "write", len(WRITE_GATE_FEATURES))
        return {"p": model.memorability(emb, side).tolist() if len(emb) else []}

    @app.post("/v1/gates/route", dependencies=auth)
    def route(body: RowsBody) -> dict[str, Any]:
        if not model.has("route"):
            raise InvalidInput("the loaded artefact has no route head")
        emb, side = _rows(body, "route", len(ROUTE_FEATURES))
        return {"p": model.route(emb, side).tolist() if len(emb) else []}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
