"""A small end-to-end run: one LoCoMo conversation, a handful of questions, memsvc and every baseline.

The memsvc variant runs once `storage.registry.build_memory_os` exists (skipped before).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.cli import eval_app, run_suite
from evals.client import EVAL_TORCH_THREADS
from evals.runner import RunOptions

BASELINES = ["bm25", "dense", "hybrid"]


def _memsvc_available() -> bool:
    try:
        from storage.registry import build_memory_os  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.data
@pytest.mark.parametrize(
    "systems",
    [
        pytest.param(BASELINES, id="baselines"),
        pytest.param(["memsvc", *BASELINES], id="memsvc",
                     marks=pytest.mark.skipif(not _memsvc_available(), reason="MemoryOS not wired yet")),
    ],
)
def test_locomo_one_conversation(data_root: Path, tmp_path: Path, systems: list[str]) -> None:
    results = run_suite(["locomo"], data_root, tmp_path, systems=systems, limit=10, scenes=1,
                        data_dir=tmp_path / "memsvc", options=RunOptions(run_id="t", progress=False), qa=False)
    for name in ("results.json", "report.md", "locomo_budget.png", "locomo_systems.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    task = saved["tasks"]["locomo"]
    assert task["n_queries"] == 10 and task["n_scenes"] == 1 and task["n_docs"] == 419
    ids = [[item["id"] for item in task["systems"][s]["items"]] for s in systems]
    assert all(i == ids[0] for i in ids) and len(ids[0]) == 10 and task["same_items"]
    assert {i["category"] for i in task["systems"]["bm25"]["items"]} >= {"single_hop", "multi_hop", "adversarial"}
    assert {d["path"] for d in saved["datasets"]} == {"locomo/locomo10_dev.json"}
    assert saved["datasets"][0]["sha256"] == "13f4981cc9369f419a40d4612d14415833940de4f06fc3b9192ed71874330da9"
    for s in systems:
        summary = task["systems"][s]
        assert 0.0 <= summary["headline"]["metrics"]["ER@10"] <= 1.0
        assert summary["write"]["messages"] == 419 and summary["latency_ms"]["n"] == 10
    report = (tmp_path / "report.md").read_text()
    assert all(f"| {s} |" in report for s in systems) and "adversarial (reported separately)" in report
    if "memsvc" in systems:
        assert "| Δ memsvc − bm25 |" in report
        assert task["systems"]["memsvc"]["write"]["memories_written"] > 0
        run = saved["config"]["memsvc"]
        assert run["torch_threads"] == EVAL_TORCH_THREADS and run["precision"] in ("fp32", "bf16")
    assert results["qa"]["enabled"] is False


@pytest.mark.data
def test_cli_runs_a_benchmark(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(eval_app, ["musique", "--data", str(data_root), "--out", str(out), "--limit", "3",
                                           "--systems", "bm25", "--no-qa"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"]["musique"]["n_queries"] == 3
    assert "nDCG@10" in saved["tasks"]["musique"]["systems"]["bm25"]["headline"]["metrics"]


def test_cli_rejects_unknown_system(tmp_path: Path) -> None:
    result = CliRunner().invoke(eval_app, ["locomo", "--out", str(tmp_path), "--systems", "bm99"])
    assert result.exit_code != 0
