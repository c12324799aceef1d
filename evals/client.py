"""`MemoryClient`: what the runners drive — memsvc in-process, memsvc over REST, or a baseline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from memsvc.schemas import SearchRequest, SearchResult, WriteRequest, WriteResult


@runtime_checkable
class MemoryClient(Protocol):
    """The two calls of the REST contract that a benchmark needs."""

    def add(self, req: WriteRequest) -> WriteResult: ...

    def search(self, req: SearchRequest) -> SearchResult: ...

    def close(self) -> None: ...


class InProcessClient:
    """The `MemoryOS` facade, called as the REST API calls it, for one tenant."""

    def __init__(self, os_: Any, tenant: str = "eval", owns: bool = True) -> None:
        self._os = os_
        self.tenant = tenant
        self._owns = owns

    def add(self, req: WriteRequest) -> WriteResult:
        return self._os.add(self.tenant, req)  # type: ignore[no-any-return]

    def search(self, req: SearchRequest) -> SearchResult:
        return self._os.search(self.tenant, req)  # type: ignore[no-any-return]

    def flush(self) -> None:
        """Digest every episode now (open ones included) and wait for the consolidation jobs, so
        the questions see what a settled service holds (timed as write time)."""
        self._os.lifecycle.settle(self.tenant)

    def describe(self) -> dict[str, Any]:
        """How memsvc was run, for the results' config."""
        embedder = self._os.embedder
        gate = self._os.gate.describe() if self._os.gate is not None else None
        return {"in_process": True, "embedder": embedder.model_name, "precision": getattr(embedder, "precision", None),
                "torch_threads": getattr(self._os.settings.embedder, "torch_threads", None),
                "gates": {k: gate[k] for k in ("name", "version", "created", "heads", "device")} if gate else None,
                "default_preset": self._os.settings.search.preset}

    def close(self) -> None:
        if self._owns:
            self._os.close()


class PresetClient:
    """Another retrieval preset over the same memsvc client: writes land in the same scopes
    (and are skipped there as duplicates), searches name `preset`."""

    def __init__(self, inner: MemoryClient, preset: str) -> None:
        self._inner = inner
        self.preset = preset

    def add(self, req: WriteRequest) -> WriteResult:
        return self._inner.add(req)

    def flush(self) -> None:
        flush = getattr(self._inner, "flush", None)
        if callable(flush):
            flush()

    def search(self, req: SearchRequest) -> SearchResult:
        return self._inner.search(req.model_copy(update={"preset": self.preset}))

    def close(self) -> None:
        """The inner client is closed by its owner."""


class CrossValidatedClient:
    """memsvc in-process, each search reranked by the cross-validation fold model that never saw the
    query's scene (`memsvc train gates` keeps one per fold, and which scene was held out where);
    scenes no fold trained on (evaluation-only sets, held-out data) get the shipped model, which
    never saw them either. Writes go to the inner client unchanged."""

    def __init__(self, inner: InProcessClient, preset: str | None, fold_by_user: dict[str, int],
                 cross_fold_by_user: dict[str, int] | None = None, cross_folds: Path | None = None) -> None:
        """`cross_fold_by_user`: for a `*_cross` preset, the cross-encoder's own folds (`memsvc train
        cross` has its own), whose models are read from `cross_folds` (a scene the shipped cross-encoder
        was trained on is never scored without its fold model: that is an error, not a fallback)."""
        from memsvc.learn import cross as X
        from memsvc.learn import gates as G

        self._inner = inner
        self.preset = preset
        self._fold_by_user = fold_by_user
        gate = inner._os.reader.gate
        self._gate = gate
        wanted = bool(fold_by_user) and gate is not None and hasattr(gate, "heads")
        self._models = G.load_folds(gate.path) if wanted else []
        self._cross_fold_by_user = cross_fold_by_user or {}
        self._cross_models: dict[int, Any] = {}
        manifest = getattr(gate, "cross_manifest", None)
        if self._cross_fold_by_user and manifest is not None:
            folder = cross_folds or X.FOLDS
            for fold in sorted(set(self._cross_fold_by_user.values())):
                self._cross_models[fold] = X.load_fold(folder, manifest, fold)

    @staticmethod
    def cross_folds_of(gate: Any) -> dict[str, int]:
        """`task/scene` -> the cross-encoder's held-out fold (empty without its artefact)."""
        manifest = getattr(gate, "cross_manifest", None)
        return dict(manifest.config.get("folds_of", {})) if manifest is not None else {}

    @staticmethod
    def folds_of(gate: Any) -> dict[str, int]:
        """`task/scene` -> held-out fold, from the loaded artefact's manifest (empty without one)."""
        manifest = getattr(gate, "manifest", None)
        return dict(manifest.config.get("folds_of", {})) if manifest is not None else {}

    def add(self, req: WriteRequest) -> WriteResult:
        return self._inner.add(req)

    def flush(self) -> None:
        self._inner.flush()

    def search(self, req: SearchRequest) -> SearchResult:
        if self.preset is not None:
            req = req.model_copy(update={"preset": self.preset})
        cross_fold = self._cross_fold_by_user.get(req.user_id)
        if cross_fold is not None and self._gate is not None:
            shipped_cross = self._gate._cross
            self._gate._cross = self._cross_models[cross_fold]
            try:
                return self._search(req)
            finally:
                self._gate._cross = shipped_cross
        return self._search(req)

    def _search(self, req: SearchRequest) -> SearchResult:
        fold = self._fold_by_user.get(req.user_id)
        if fold is None or self._gate is None or fold >= len(self._models):
            return self._inner.search(req)
        heads = self._gate.heads
        shipped = {h: heads[h] for h in self._models[fold] if h in heads}
        heads.update(self._models[fold])
        try:
            return self._inner.search(req)
        finally:
            heads.update(shipped)

    def close(self) -> None:
        """The inner client is closed by its owner."""


class RestClientError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"memsvc answered {status}: {body[:500]}")
        self.status = status


class RestClient:
    """A live memsvc server over REST (`POST /v1/memories`, `POST /v1/memories/search`)."""

    def __init__(self, url: str, key: str, timeout_s: float = 600.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout_s,
            transport=transport,
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self._http.post(path, json=body)
        if resp.status_code >= 400:
            raise RestClientError(resp.status_code, resp.text)
        return resp.json()  # type: ignore[no-any-return]

    def add(self, req: WriteRequest) -> WriteResult:
        body = req.model_dump(mode="json", exclude_none=True)
        body["wait"] = True  # the runner measures the write before it searches
        return WriteResult.model_validate(self._post("/v1/memories", body))

    def search(self, req: SearchRequest) -> SearchResult:
        return SearchResult.model_validate(
            self._post("/v1/memories/search", req.model_dump(mode="json", exclude_none=True))
        )

    def close(self) -> None:
        self._http.close()


# The runners call memsvc one request at a time, so torch may take every core: writes of the
# KnowMe-Bench corpus 159 -> 131 s (first 3,100 records, 2 cores). A server keeps its default, half
# the cores, for its concurrent requests (benchmarks/mixed_load.py: search p50 143 ms with one
# torch thread, 168 ms with two, while one writer and four searchers share 2 cores).
EVAL_TORCH_THREADS = os.cpu_count() or 1


def build_in_process(data_dir: str, tenant: str = "eval", **overrides: Any) -> InProcessClient:
    """Wire memsvc on embedded defaults under `data_dir` (the eval CLI is one of the two wiring places);
    a local embedder without a configured thread count gets `EVAL_TORCH_THREADS`. `overrides` replace
    settings sections (e.g. `gates=NoGates()` for training data)."""
    from memsvc.config import LocalEmbedder, Settings
    from storage.registry import build_memory_os

    settings = Settings(data_dir=Path(data_dir), **overrides)
    if isinstance(settings.embedder, LocalEmbedder) and settings.embedder.torch_threads is None:
        embedder = settings.embedder.model_copy(update={"torch_threads": EVAL_TORCH_THREADS})
        settings = settings.model_copy(update={"embedder": embedder})
    return InProcessClient(build_memory_os(settings), tenant=tenant)
