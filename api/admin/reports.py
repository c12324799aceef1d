"""Evaluation runs on disk: per-run folders holding `results.json`, `report.md` and PNG plots."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote as _quote

from markupsafe import Markup, escape

_NAME = re.compile(r"^[\w][\w.-]{0,200}$")
_TABLE_ALIGN = re.compile(r' style="text-align:(left|right|center)"')
MAX_REPORT_BYTES = 2_000_000


@dataclass
class Run:
    name: str
    path: Path
    modified: datetime
    files: list[str] = field(default_factory=list)

    @property
    def has_report(self) -> bool:
        return "report.md" in self.files

    @property
    def has_results(self) -> bool:
        return "results.json" in self.files

    @property
    def images(self) -> list[str]:
        return [f for f in self.files if f.endswith(".png")]


def _run(path: Path) -> Run | None:
    files = sorted(p.name for p in path.iterdir() if p.is_file() and _NAME.match(p.name))
    if "report.md" not in files and "results.json" not in files:
        return None
    newest = max((path / f).stat().st_mtime for f in files if f in ("report.md", "results.json"))
    return Run(path.name, path, datetime.fromtimestamp(newest, UTC), files)


def list_runs(root: Path) -> list[Run]:
    """Run folders directly under `root`, newest first."""
    if not root.is_dir():
        return []
    runs = [r for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (r := _run(p)) is not None]
    return sorted(runs, key=lambda r: (r.modified, r.name), reverse=True)


def quote(name: str) -> str:
    return _quote(name, safe="")


def find_run(root: Path, name: str) -> Run | None:
    if not _NAME.match(name) or not root.is_dir():
        return None
    path = root / name
    return _run(path) if path.is_dir() else None


def run_file(run: Run, name: str) -> Path | None:
    """A file of the run by exact name: no path separators, no dot-files, nothing outside the folder."""
    if name not in run.files:
        return None
    path = (run.path / name).resolve()
    return path if path.parent == run.path.resolve() and path.is_file() else None


def render_markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML disabled (it is shown as text); a <pre> if no renderer is installed."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # markdown-it-py comes with rich (typer); fall back to plain text
        return Markup("<pre>") + escape(text) + Markup("</pre>")
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    html = md.render(text)
    # Inline styles are blocked by the page's CSP; keep the column alignment as a class instead.
    return Markup(_TABLE_ALIGN.sub(r' class="align-\1"', html))


def report_html(run: Run) -> Markup | None:
    path = run_file(run, "report.md")
    if path is None:
        return None
    raw = path.read_bytes()[:MAX_REPORT_BYTES]
    return render_markdown(raw.decode("utf-8", errors="replace"))


def results_summary(run: Run) -> dict[str, Any]:
    """The run's `config` (scalars and short lists) and its tasks' headline metrics, if readable."""
    path = run_file(run, "results.json")
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        return {"error": f"results.json unreadable: {exc}"}
    if not isinstance(data, dict):
        return {"error": "results.json is not an object"}
    config = data.get("config")
    config = config if isinstance(config, dict) else {}
    shown = {k: v for k, v in config.items()
             if isinstance(v, str | int | float | bool) or (isinstance(v, list) and len(v) <= 12)}
    tasks = data.get("tasks")
    return {"config": shown, "tasks": sorted(tasks) if isinstance(tasks, dict) else []}
