"""`memsvc train gates`, bounded: one LoCoMo conversation, a few questions, two folds — the same code
path as the full run, ending in an artefact the service loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from memsvc.learn import gates as G
from storage.gates.local import TorchGateModel


@pytest.mark.data
def test_bounded_training_writes_a_loadable_artefact_with_its_manifest(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "gates"
    result = CliRunner().invoke(app, [
        "train", "gates", "--data", str(data_root), "--tasks", "locomo,proced_mem_bench", "--scenes", "1", "--limit", "8",
        "--folds", "2", "--steps", "10", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    pairs = (line.split(None, 1) for line in (data_root / "SHA256SUMS").read_text().splitlines() if line.strip())
    sums = {path.strip(): digest for digest, path in pairs}
    assert manifest["data"]["locomo/locomo10_dev.json"] == sums["locomo/locomo10_dev.json"]
    assert all(sums[f] == h for f, h in manifest["data"].items())
    assert manifest["name"] == "memsvc-gates" and manifest["config"]["folds"] == 2
    assert set(manifest["metrics"]) == {"rerank", "write", "route"}
    pooled = manifest["metrics"]["rerank"]["locomo/hybrid_temporal"]
    assert set(pooled) >= {"fused", "fused+dedup", "rerank", "by_category"} and pooled["rerank"]["n"] >= 1
    assert set(manifest["config"]["folds_of"].values()) <= {0, 1}
    assert len(G.load_folds(out)) == 2
    model = TorchGateModel(out, device="cpu")
    assert all(model.has(h) for h in G.HEADS)
    assert model.describe()["metrics"] == manifest["metrics"]
