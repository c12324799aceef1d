"""The gate model behind `memsvc gates serve`: the same port over HTTP (JSON arrays)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from memsvc.errors import BackendUnavailable
from memsvc.learn.features import compatible

log = logging.getLogger(__name__)


class RemoteGateModel:
    def __init__(self, url: str, timeout_s: float = 2.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, transport=transport)
        self._info = self._call("GET", "/v1/gates")
        loaded = self._info.get("heads", [])
        self._usable = {h for h in loaded if self._reads_our_columns(h)}
        if skipped := sorted(set(loaded) - self._usable):
            log.warning("gate worker at %s: heads %s read other inputs than this version computes (a worker of "
                        "another version?); their heuristic twins run instead", url, skipped)

    def _reads_our_columns(self, head: str) -> bool:
        """Whether the worker's head takes the rows this code sends: a worker of another version
        (whose write head reads other columns, say) would refuse or misread every call."""
        spec = self._info.get("specs", {}).get(head)
        return isinstance(spec, dict) and compatible(head, spec)  # not a dict: the worker does not say

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"gate worker unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise BackendUnavailable(f"gate worker answered {resp.status_code}: {resp.text[:200]}")
        out: dict[str, Any] = resp.json()
        return out

    def has(self, head: str) -> bool:
        return head in self._usable

    def rerank(self, lists: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = self._call("POST", "/v1/gates/rerank", {"lists": [np.asarray(x).tolist() for x in lists]})
        return [np.asarray(s, dtype=np.float32) for s in out["scores"]]

    # An empty batch is answered here, in the shapes the local model gives, without a round trip.

    def adapt(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if len(q) == 0:
            return q.reshape(0, q.shape[1] if q.ndim == 2 else 0)
        out = self._call("POST", "/v1/gates/query", {"embeddings": q.tolist()})
        return np.asarray(out["q"], dtype=np.float32)

    def memorability(self, embeddings: np.ndarray, side: np.ndarray) -> np.ndarray:
        if len(embeddings) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self._call("POST", "/v1/gates/write", {"embeddings": embeddings.tolist(), "side": side.tolist()})
        return np.asarray(out["p"], dtype=np.float32)

    def route(self, embeddings: np.ndarray, side: np.ndarray) -> np.ndarray:
        if len(embeddings) == 0:
            outputs = self._info.get("specs", {}).get("route", {}).get("outputs", ())
            return np.zeros((0, len(outputs)), dtype=np.float32)
        out = self._call("POST", "/v1/gates/route", {"embeddings": embeddings.tolist(), "side": side.tolist()})
        return np.asarray(out["p"], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {**self._info, "kind": "remote", "url": str(self._http.base_url)}

    def close(self) -> None:
        self._http.close()
