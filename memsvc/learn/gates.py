"""The gate model's artefact: which heads it carries, how to build them, how to save and load them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from memsvc.learn.artefact import Manifest, read_manifest, write_manifest
from memsvc.learn.features import ADAPTED_FEATURES, compatible
from memsvc.learn.features import head_spec as head_spec  # the artefact's head specs, defined torch-free
from memsvc.learn.nets import QueryAdapter, RerankHead, RouterHead, SecondProjection, WriteGateHead

NAME = "memsvc-gates"
VERSION = "1"
HEADS = ("rerank", "query", "second", "write", "route")
PACKAGED = Path(__file__).resolve().parent / "artefacts" / "gates"
# The same heads with the reranker trained on the projected query (`second` head: no e5 pass per
# search; `MEMSVC_GATES__PATH` names it): half the CPU of a reranked search, a little less recall (README).
PROJECTED = PACKAGED.parent / "gates-projected"


def build_head(head: str, spec: dict[str, Any]) -> nn.Module:
    if head == "rerank":
        return RerankHead(len(spec["features"]), hidden=int(spec.get("hidden", 64)))
    if head == "query":
        return QueryAdapter(int(spec["dim"]))
    if head == "second":
        return SecondProjection(int(spec["dim"]), int(spec["out_dim"]))
    if head == "write":
        return WriteGateHead(int(spec["dim"]), len(spec["features"]), hidden=int(spec.get("hidden", 32)))
    if head == "route":
        return RouterHead(int(spec["dim"]), len(spec["features"]), len(spec["outputs"]), hidden=int(spec.get("hidden", 32)))
    raise ValueError(f"unknown head {head!r}")


def save(folder: Path, heads: dict[str, nn.Module], manifest: Manifest) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({h: m.state_dict() for h, m in heads.items()}, folder / manifest.weights)
    write_manifest(folder, manifest)


FOLDS = "folds.pt"


def save_folds(folder: Path, models: list[dict[str, nn.Module]]) -> None:
    """The cross-validation's read-gate heads (`folds[f]` never saw a scene of fold f: its reranker
    and, when the artefact has one, its query adapter), for evaluations that must not score a
    conversation with a model trained on it."""
    torch.save([{h: _half(m.state_dict()) for h, m in fold.items()} for fold in models], folder / FOLDS)


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Evaluation-only weights are stored in float16 (half the bytes in the repository; loading
    casts them back to float32, a relative error of about 5e-4 on each weight)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def load_folds(folder: Path) -> list[dict[str, nn.Module]]:
    manifest = read_manifest(folder)
    out = []
    for states in torch.load(folder / FOLDS, map_location="cpu", weights_only=True):
        fold = {}
        for head, state in states.items():
            module = build_head(head, manifest.heads[head])
            module.load_state_dict(state)
            module.eval()
            fold[head] = module
        out.append(fold)
    return out


def load(folder: Path) -> tuple[Manifest, dict[str, nn.Module]]:
    """The manifest and every head it lists that this code can run (others are left out)."""
    manifest = read_manifest(folder)
    states = torch.load(folder / manifest.weights, map_location="cpu", weights_only=True)
    heads: dict[str, nn.Module] = {}
    for head, spec in manifest.heads.items():
        if head not in states or not compatible(head, spec):
            continue
        module = build_head(head, spec)
        module.load_state_dict(states[head])
        module.eval()
        heads[head] = module
    if "rerank" in heads and "query" not in heads and ADAPTED_FEATURES[0] in manifest.heads["rerank"]["features"]:
        del heads["rerank"]  # it reads the query adapter's columns: without the adapter it would be blind
    return manifest, heads
