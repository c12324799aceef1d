"""Run outputs: `results.json` (config, dataset checksums, per-item results), `report.md`, PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.metrics import mean
from memsvc.learn.artefact import sha256_file

DIALOGUE_COLUMNS = ("ER@5", "ER@10", "ER@20", "WR@250", "WR@500", "WR@1000", "AF@10", "AFW@1000", "nDCG@10")
LMEB_COLUMNS = ("nDCG@10", "R@1", "R@5", "R@10", "R@25", "R@50")
CATEGORY_COLUMNS = ("ER@10", "WR@500", "nDCG@10", "R@10")
HEADLINE = "nDCG@10"


def dataset_checksums(files: Sequence[Path], root: Path | None = None) -> list[dict[str, Any]]:
    out = []
    for f in dict.fromkeys(files):
        try:
            name = str(f.relative_to(root)) if root else str(f)
        except ValueError:
            name = str(f)
        out.append({"path": name, "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    return out


MIN_QUERIES_FOR_AVERAGE = 10


def memory_type_table(tasks: dict[str, Any], metric: str = HEADLINE) -> dict[str, dict[str, float]]:
    """Macro average over the tasks of each memory type of each system's headline `metric`
    (tasks with fewer than `MIN_QUERIES_FOR_AVERAGE` queries are left out)."""
    table: dict[str, dict[str, list[float]]] = {}
    for t in tasks.values():
        if t["n_queries"] < MIN_QUERIES_FOR_AVERAGE:
            continue
        for system, s in t["systems"].items():
            value = s["headline"]["metrics"].get(metric)
            if value is not None:
                table.setdefault(t["memory_type"], {}).setdefault(system, []).append(value)
    return {mt: {s: mean(v) for s, v in row.items()} for mt, row in table.items()}


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if pct else f"{value:.1f}"


def _delta(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{100 * (a - b):+.1f}"


def metric_table(rows: dict[str, dict[str, float]], columns: Sequence[str], reference: str | None) -> list[str]:
    """Systems as rows, metrics as columns (×100); with a reference system, Δ rows (reference − other)."""
    cols = [c for c in columns if any(c in r for r in rows.values())]
    lines = ["| system | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for system, r in rows.items():
        lines.append(f"| {system} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    if reference in rows:
        for system, r in rows.items():
            if system != reference:
                lines.append(f"| Δ {reference} − {system} | "
                             + " | ".join(_delta(rows[reference].get(c), r.get(c)) for c in cols) + " |")
    return lines


def _columns(task: dict[str, Any]) -> tuple[str, ...]:
    return DIALOGUE_COLUMNS if task["memory_type"] == "dialogue" else LMEB_COLUMNS


def task_section(name: str, task: dict[str, Any], reference: str | None, plots: list[str]) -> list[str]:
    systems = task["systems"]
    lines = [f"## {name} ({task['memory_type']})", ""]
    lines.append(f"{task['n_queries']} queries over {task['n_docs']} documents in {task['n_scenes']} scene(s); "
                 f"memsvc writes with infer={task['infer']}.")
    main = next(iter(systems.values()))["main_categories"] if systems else []
    lines += ["", f"Headline over categories: {', '.join(main)}.", ""]
    lines += metric_table({s: v["headline"]["metrics"] for s, v in systems.items()}, _columns(task), reference)
    session_cols = tuple(f"session_{c}" for c in _columns(task))
    if any(c in v["headline"]["metrics"] for v in systems.values() for c in session_cols):
        lines += ["", "Session level:", ""]
        lines += metric_table({s: v["headline"]["metrics"] for s, v in systems.items()}, session_cols, reference)
    cats = list(next(iter(systems.values()))["by_category"]) if systems else []
    if len(cats) > 1:
        metric = "ER@10" if task["memory_type"] == "dialogue" else "nDCG@10"
        lines += ["", f"Per category ({metric}):", "",
                  "| category | n | " + " | ".join(systems) + " |", "| --- | ---: |" + " ---: |" * len(systems)]
        for c in cats:
            n = next(iter(systems.values()))["by_category"][c]["n"]
            flag = "" if c in main else " (reported separately)"
            vals = [_fmt(v["by_category"][c]["metrics"].get(metric)) for v in systems.values()]
            lines.append(f"| {c}{flag} | {n} | " + " | ".join(vals) + " |")
    lines += ["", "| system | search p50 ms | search p95 ms | write msg/s | memories written |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for s, v in systems.items():
        lat, w = v["latency_ms"], v["write"]
        lines.append(f"| {s} | {lat['p50']:.1f} | {lat['p95']:.1f} | {w['messages_per_s']:.1f} | {w['memories_written']} |")
    if "memsvc-ppr" in systems and "memsvc" in systems:
        lines += ["", "memsvc-ppr searches the scopes memsvc wrote (its own writes are skipped as duplicates), "
                      "so its write columns are not a throughput."]
    qa_rows = {s: v["headline"]["metrics"].get("QA") for s, v in systems.items()}
    if any(v is not None for v in qa_rows.values()):
        lines += ["", "QA accuracy (LLM judge): " + ", ".join(f"{s} {_fmt(v)}" for s, v in qa_rows.items())]
    notes = list(task.get("notes", [])) + [f"{k}: {v}" for k, v in task.get("dropped", {}).items()]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    return lines


def write_report(out: Path, results: dict[str, Any], plots: dict[str, list[str]]) -> Path:
    tasks = results["tasks"]
    systems = results["config"]["systems"]
    reference = "memsvc" if "memsvc" in systems else None
    lines = ["# memsvc evaluation", "", f"Command: `{results['config']['command']}`", "",
             f"Started {results['config']['started']}; {results['config']['duration_s']:.0f} s; "
             f"systems: {', '.join(systems)}; top_k={results['config']['top_k']}.", ""]
    lines += ["Metrics (×100): ER@k evidence recall in the top k results; WR@w recall within w words of returned "
              "content; AF all evidence found; nDCG@10 and R@k over the document ranking (LMEB). A memory is "
              "credited only with the sources whose content it states (`evals.metrics.states_source`).", ""]
    lines += ["## Summary (" + HEADLINE + ")", "", "| task | type | n | " + " | ".join(systems) + " |",
              "| --- | --- | ---: |" + " ---: |" * len(systems)]
    for name, t in tasks.items():
        vals = [_fmt(t["systems"].get(s, {}).get("headline", {}).get("metrics", {}).get(HEADLINE)) for s in systems]
        lines.append(f"| {name} | {t['memory_type']} | {t['n_queries']} | " + " | ".join(vals) + " |")
    by_type = results.get("memory_types", {})
    if len(tasks) > 1 and by_type:
        few = [n for n, t in tasks.items() if t["n_queries"] < MIN_QUERIES_FOR_AVERAGE]
        lines += ["", "Per memory type (macro average over tasks" +
                  (f"; left out for fewer than {MIN_QUERIES_FOR_AVERAGE} queries: {', '.join(few)}" if few else "")
                  + "):", ""]
        lines += metric_table({s: {mt: row.get(s) for mt, row in by_type.items() if row.get(s) is not None}
                               for s in systems}, tuple(by_type), reference)
    lines += [""] + [f"![{p}]({p})" for p in plots.get("_suite", [])] + [""]
    for name, t in tasks.items():
        lines += task_section(name, t, reference, plots.get(name, []))
    qa = results.get("qa")
    if qa:
        lines += ["## QA", "", str(qa.get("message", qa)), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_plots(out: Path, results: dict[str, Any]) -> dict[str, list[str]]:
    """Recall vs word budget per category (one panel per system) and systems side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, list[str]] = {}
    budgets = results["config"]["budgets"]
    for name, t in results["tasks"].items():
        systems = t["systems"]
        files = []
        fig, axes = plt.subplots(1, len(systems), figsize=(4 * len(systems), 3.4), sharey=True, squeeze=False)
        for ax, (system, s) in zip(axes[0], systems.items(), strict=True):
            for cat, row in s["by_category"].items():
                ys = [row["metrics"].get(f"WR@{b}") for b in budgets]
                if None not in ys:
                    ax.plot(budgets, ys, marker="o", label=f"{cat} (n={row['n']})")
            ax.set_title(system)
            ax.set_xlabel("word budget")
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("evidence recall")
        handles, labels = axes[0][0].get_legend_handles_labels()
        rows = -(-len(labels) // 4)
        fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=7)
        fig.suptitle(f"{name}: recall vs word budget")
        fig.tight_layout(rect=(0, 0.06 * rows + 0.02, 1, 1))
        files.append(f"{name}_budget.png")
        fig.savefig(out / files[-1], dpi=110)
        plt.close(fig)

        cols = [c for c in _columns(t) if all(c in s["headline"]["metrics"] for s in systems.values())]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols)), 3.4))
        width = 0.8 / max(1, len(systems))
        for i, (system, s) in enumerate(systems.items()):
            xs = [j + i * width for j in range(len(cols))]
            ax.bar(xs, [s["headline"]["metrics"][c] for c in cols], width, label=system)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title(f"{name}: systems side by side")
        fig.tight_layout()
        files.append(f"{name}_systems.png")
        fig.savefig(out / files[-1], dpi=110)
        plt.close(fig)
        plots[name] = files
    if len(results["tasks"]) > 1:
        names = list(results["tasks"])
        systems = results["config"]["systems"]
        fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names)), 3.6))
        width = 0.8 / max(1, len(systems))
        for i, system in enumerate(systems):
            vals = [results["tasks"][n]["systems"].get(system, {}).get("headline", {}).get("metrics", {}).get(HEADLINE, 0)
                    for n in names]
            ax.bar([j + i * width for j in range(len(names))], vals, width, label=system)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, ha="right")
        ax.set_ylabel(HEADLINE)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "summary.png", dpi=110)
        plt.close(fig)
        plots["_suite"] = ["summary.png"]
    return plots


def write_outputs(out: Path, results: dict[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    results["memory_types"] = memory_type_table(results["tasks"])
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    plots = write_plots(out, results)
    report = write_report(out, results, plots)
    return {"results": out / "results.json", "report": report,
            **{p: out / p for files in plots.values() for p in files}}
