"""The gate model in-process: the artefact's heads on CPU (fp32) or CUDA (bf16 by default), and the
cross-encoder stage (`memsvc.learn.cross`) when its artefact is present, loaded at its first use."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memsvc.errors import BackendUnavailable
from memsvc.learn import cross as X
from memsvc.learn import gates as G
from memsvc.learn.artefact import Manifest, read_manifest
from memsvc.learn.features import compatible


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("MEMSVC_GATES__DEVICE=cuda but torch sees no CUDA device")
    return device


def pick_dtype(precision: str, device: str) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class TorchGateModel:
    """Heads loaded from one artefact folder; every call is one batched forward pass per head."""

    def __init__(self, path: Path | None = None, device: str = "auto", precision: str = "auto",
                 cross: Path | bool = True) -> None:
        """`cross`: the cross-encoder's artefact folder, True for the packaged one when present, False
        for none."""
        self.path = Path(path) if path is not None else G.PACKAGED
        if not (self.path / "manifest.json").exists():
            raise FileNotFoundError(f"no gate artefact at {self.path} (train one: memsvc train gates)")
        self.manifest, heads = G.load(self.path)
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.heads = {h: m.to(self.device, self.dtype) for h, m in heads.items()}
        self._lock = threading.Lock()  # modules are shared by request threads; inference is tiny
        self.cross_path: Path | None = None
        self.cross_manifest: Manifest | None = None
        self._cross: X.CrossEncoder | None = None
        folder = X.PACKAGED if cross is True else Path(cross) if cross else None
        if folder is not None and (folder / "manifest.json").exists():
            manifest = read_manifest(folder)
            if compatible("cross", manifest.heads.get("cross", {})):
                self.cross_path, self.cross_manifest = folder, manifest
        elif folder is not None and cross is not True:
            raise FileNotFoundError(f"no cross-encoder artefact at {folder} (train one: memsvc train cross)")

    def has(self, head: str) -> bool:
        return head in self.heads or (head == "cross" and self.cross_manifest is not None)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=self.device).to(self.dtype)

    def rerank(self, lists: Sequence[np.ndarray]) -> list[np.ndarray]:
        head = self.heads["rerank"]
        sizes = [len(x) for x in lists]
        if sum(sizes) == 0:
            return [np.zeros(0, dtype=np.float32) for _ in lists]
        with self._lock, torch.inference_mode():
            flat = head(self._tensor(np.concatenate([x for x in lists if len(x)])))
        scores = flat.float().cpu().numpy()
        return list(np.split(scores, np.cumsum(sizes)[:-1]))

    def adapt(self, queries: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            moved = self.heads["query"](self._tensor(queries))
        out: np.ndarray = moved.float().cpu().numpy()
        return out

    def project(self, queries: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            moved = self.heads["second"](self._tensor(queries))
        out: np.ndarray = moved.float().cpu().numpy()
        return out

    def memorability(self, embeddings: np.ndarray, side: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            logits = self.heads["write"](self._tensor(embeddings), self._tensor(side))
        out: np.ndarray = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def route(self, embeddings: np.ndarray, side: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            logits = self.heads["route"](self._tensor(embeddings), self._tensor(side))
        out: np.ndarray = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def _cross_model(self) -> X.CrossEncoder:
        """The cross-encoder, loaded at its first use (a node that serves no `*_cross` preset never
        pays its memory or load time)."""
        with self._lock:
            if self._cross is None:
                if self.cross_path is None:
                    raise KeyError("cross")
                _, model = X.load(self.cross_path)
                self._cross = model.to(self.device, self.dtype)
            return self._cross

    def cross(self, query: str, texts: Sequence[str]) -> np.ndarray:
        scores = self._cross_model().score(query, texts)  # no lock: a forward pass changes nothing
        return np.asarray(scores, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        m, c = self.manifest, self.cross_manifest
        specs = {h: m.heads[h] for h in sorted(self.heads)}  # what each loaded head reads
        if c is not None:
            specs["cross"] = c.heads["cross"]
        return {
            "name": m.name, "version": m.version, "created": m.created.isoformat(), "kind": "local",
            "device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
            "heads": sorted([*self.heads, *(["cross"] if c is not None else [])]),
            "data": m.data, "metrics": m.metrics, "config": m.config, "command": m.command,
            "query_dim": int(m.heads["query"]["dim"]) if "query" in self.heads else None,
            "specs": specs,
            **({"cross": {"name": c.name, "version": c.version, "created": c.created.isoformat(), "data": c.data,
                          "metrics": c.metrics, "config": c.config, "command": c.command,
                          "loaded": self._cross is not None}} if c is not None else {}),
        }

    def close(self) -> None:
        self.heads = {}
        self._cross = None
