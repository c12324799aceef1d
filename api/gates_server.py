"""`memsvc gates serve`: the gate model as a worker of its own (e.g. on a GPU host), shared by API
nodes configured with `MEMSVC_GATES__KIND=remote`. JSON over HTTP; every call is one batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from api import errors
from memsvc.errors import InvalidInput
from memsvc.learn.features import RERANK_FEATURES, ROUTE_FEATURES, WRITE_GATE_FEATURES
from memsvc.ports import GateModel

MAX_ROWS = 20_000


class RerankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lists: list[list[list[float]]] = Field(description="candidate lists; rows of RERANK_FEATURES")


class RowsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embeddings: list[list[float]]
    side: list[list[float]]


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embeddings: list[list[float]] = Field(description="query embeddings, one per row")


def _matrix(rows: list[list[float]], width: int | None, what: str) -> np.ndarray:
    if len(rows) > MAX_ROWS:
        raise InvalidInput(f"at most {MAX_ROWS} rows per call")
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or (width is not None and x.shape[1] != width) or not np.isfinite(x).all():
        raise InvalidInput(f"{what}: expected a finite matrix with {width} columns")
    return x


def create_gates_app(model: GateModel) -> FastAPI:
    app = FastAPI(title="memsvc gates", version="0.1.0",
                  description="The learned gate heads (reranker and its query adapter, write gate, router) as a shared worker.")
    errors.install(app)
    dim = model.describe().get("query_dim")  # the query adapter's input width (None without one)

    @app.get("/v1/gates")
    def describe() -> dict[str, Any]:
        return model.describe()

    @app.post("/v1/gates/rerank")
    def rerank(body: RerankBody) -> dict[str, Any]:
        if not model.has("rerank"):
            raise InvalidInput("the loaded artefact has no rerank head")
        lists = [_matrix(x, len(RERANK_FEATURES), "lists") if x else np.zeros((0, len(RERANK_FEATURES)), np.float32)
                 for x in body.lists]
        return {"scores": [s.tolist() for s in model.rerank(lists)]}

    @app.post("/v1/gates/query")
    def query(body: QueryBody) -> dict[str, Any]:
        if not model.has("query"):
            raise InvalidInput("the loaded artefact has no query adapter")
        return {"q": model.adapt(_matrix(body.embeddings, dim, "embeddings")).tolist()}

    def _rows(body: RowsBody, side_width: int) -> tuple[np.ndarray, np.ndarray]:
        emb = _matrix(body.embeddings, None, "embeddings")
        side = _matrix(body.side, side_width, "side")
        if len(emb) != len(side):
            raise InvalidInput("embeddings and side need the same number of rows")
        return emb, side

    @app.post("/v1/gates/write")
    def write(body: RowsBody) -> dict[str, Any]:
        if not model.has("write"):
            raise InvalidInput("the loaded artefact has no write head")
        return {"p": model.memorability(*_rows(body, len(WRITE_GATE_FEATURES))).tolist()}

    @app.post("/v1/gates/route")
    def route(body: RowsBody) -> dict[str, Any]:
        if not model.has("route"):
            raise InvalidInput("the loaded artefact has no route head")
        return {"p": model.route(*_rows(body, len(ROUTE_FEATURES))).tolist()}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
