"""The gate model behind `memsvc gates serve`: the same port over HTTP (JSON arrays)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from memsvc.errors import BackendUnavailable
from memsvc.learn.features import compatible

log = logging.getLogger(__name__)


class RemoteGateModel:
    """A `memsvc gates serve` worker behind the `GateModel` port. What its heads read is asked once
    (`GET /v1/gates`); a worker out of reach then (a node that starts before its worker) is no error:
    no head is usable, so the heuristic twins run, and `has` asks again at most every `retry_s`
    seconds until the worker answers. Calls to a worker that goes away later raise
    `BackendUnavailable`, which the read and write paths answer with the heuristic twins
    (`memsvc.gating`)."""

    def __init__(self, url: str, timeout_s: float = 2.0, transport: httpx.BaseTransport | None = None,
                 retry_s: float = 30.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, transport=transport, headers=headers)
        self._url = url
        self.retry_s = retry_s
        self._info: dict[str, Any] = {}
        self._usable: set[str] = set()
        self._connected = False
        self._next_try = 0.0
        self._down_until = 0.0  # monotonic time before which no call is sent (`_call`)
        self._lock = threading.Lock()
        self._connect()

    def _connect(self) -> None:
        """Ask the worker what its heads read; one thread at a time, the others go on without it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._connected:
                return
            try:
                info = self._call("GET", "/v1/gates")
            except BackendUnavailable as exc:
                self._next_try = time.monotonic() + self.retry_s
                log.warning("gate worker at %s: %s; the heuristic gates run until it answers (asked again in %gs)",
                            self._url, exc, self.retry_s)
                return
            self._info = info
            loaded = info.get("heads", [])
            self._usable = {h for h in loaded if self._reads_our_columns(h)}
            self._connected = True
            if skipped := sorted(set(loaded) - self._usable):
                log.warning("gate worker at %s: heads %s read other inputs than this version computes (a worker of "
                            "another version?); their heuristic twins run instead", self._url, skipped)
        finally:
            self._lock.release()

    def _reads_our_columns(self, head: str) -> bool:
        """Whether the worker's head takes the rows this code sends: a worker of another version
        (whose write head reads other columns, say) would refuse or misread every call."""
        spec = self._info.get("specs", {}).get(head)
        return isinstance(spec, dict) and compatible(head, spec)  # not a dict: the worker does not say

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request. A worker that did not answer (unreachable, timed out, a 5xx) is not asked again
        for `retry_s`: until then every call fails at once instead of waiting out `timeout_s`, so a
        hung worker costs a node one timeout per `retry_s`, not one per search."""
        wait = self._down_until - time.monotonic()
        if wait > 0:
            raise BackendUnavailable(f"gate worker did not answer a call just before; asked again in {wait:.0f}s")
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self._down_until = time.monotonic() + self.retry_s
            raise BackendUnavailable(f"gate worker unreachable: {exc}") from exc
        if resp.status_code >= 500:
            self._down_until = time.monotonic() + self.retry_s
        if resp.status_code != 200:
            raise BackendUnavailable(f"gate worker answered {resp.status_code}: {resp.text[:200]}")
        out: dict[str, Any] = resp.json()
        return out

    def has(self, head: str) -> bool:
        if not self._connected and time.monotonic() >= self._next_try:
            self._connect()
        return head in self._usable

    def rerank(self, lists: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = self._call("POST", "/v1/gates/rerank", {"lists": [np.asarray(x).tolist() for x in lists]})
        return [np.asarray(s, dtype=np.float32) for s in out["scores"]]

    def cross(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        out = self._call("POST", "/v1/gates/cross", {"query": query, "texts": list(texts)})
        return np.asarray(out["scores"], dtype=np.float32)

    # An empty batch is answered here, in the shapes the local model gives, without a round trip.

    def adapt(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if len(q) == 0:
            return q.reshape(0, q.shape[1] if q.ndim == 2 else 0)
        out = self._call("POST", "/v1/gates/query", {"embeddings": q.tolist()})
        return np.asarray(out["q"], dtype=np.float32)

    def project(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if len(q) == 0:
            out_dim = int(self._info.get("specs", {}).get("second", {}).get("out_dim", 0))
            return np.zeros((0, out_dim), dtype=np.float32)
        out = self._call("POST", "/v1/gates/second", {"embeddings": q.tolist()})
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
        return {"heads": [], **self._info, "kind": "remote", "url": str(self._http.base_url),
                "connected": self._connected}

    def close(self) -> None:
        self._http.close()
