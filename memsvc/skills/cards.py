"""Skill cards: Markdown files with YAML front matter, loaded from the bank's folder.

Front matter: `id`, `version`, `operations` (INSERT / UPDATE / DELETE / NOOP), `target_types`,
`executor` (`offline`: a built-in handler named by `handler`; `llm`: an OpenAI-compatible model;
`agent`: the operations an agent sends), `selection` (`always`: every message; `controller`: the
skill controller chooses per span; `episode`: once per episode of gated spans; `explicit`: only
when a request names operations), `roles`
(message roles the skill may read) and `parameters` (the handler's patterns and thresholds, which
the designer refines). Sections: Purpose / When to use / How to apply / Constraints.

Each card may have a history file (`history/<id>.jsonl`): one line per version, written by the
designer when it keeps a change, with what changed and the development score before and after.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

_FRONT = re.compile(r"\A---\n(.*?)\n---\n(.*)\Z", re.S)
_SECTION = re.compile(r"^## +(.+)$", re.M)
SECTIONS = ("Purpose", "When to use", "How to apply", "Constraints")
HISTORY_DIR = "history"


class SkillCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    version: int
    operations: list[str]
    target_types: list[str]
    executor: Literal["offline", "llm", "agent"] = Field(description="offline (built-in handler), llm or agent")
    handler: str | None = Field(None, description="the built-in handler an offline card runs")
    selection: Literal["always", "controller", "episode", "explicit"] = "controller"
    roles: list[str] = Field(default_factory=lambda: ["user"])
    parameters: dict[str, Any] = Field(default_factory=dict)
    sections: dict[str, str]
    path: str
    history: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def executor_key(self) -> str:
        """The executor this card runs on: `offline:<handler>`, `llm` or `agent`."""
        return f"offline:{self.handler}" if self.executor == "offline" else self.executor

    def describe_text(self) -> str:
        """What the controller embeds to recognise the skill: its purpose and when to use it."""
        return f"{self.sections.get('Purpose', '')}\n{self.sections.get('When to use', '')}".strip()


_KEYS = ("id", "version", "operations", "target_types", "executor", "handler", "selection", "roles", "parameters")


def parse_card_text(text: str, name: str) -> SkillCard:
    m = _FRONT.match(text)
    if not m:
        raise ValueError(f"{name}: missing front matter")
    front = yaml.safe_load(m.group(1)) or {}
    if not isinstance(front, dict):
        raise ValueError(f"{name}: front matter is not a mapping")
    unknown = sorted(set(front) - set(_KEYS))
    if unknown:
        raise ValueError(f"{name}: unknown front matter keys {unknown}")
    body = m.group(2)
    heads = list(_SECTION.finditer(body))
    sections = {
        h.group(1).strip(): body[h.end(): heads[i + 1].start() if i + 1 < len(heads) else len(body)].strip()
        for i, h in enumerate(heads)
    }
    return SkillCard.model_validate({**front, "sections": sections, "path": name})


def parse_card(path: Path) -> SkillCard:
    card = parse_card_text(path.read_text(encoding="utf-8"), path.name)
    history = path.parent / HISTORY_DIR / f"{card.id}.jsonl"
    if history.is_file():
        card.history = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
    return card


def render_card(card: SkillCard) -> str:
    """The card as a Markdown file (front matter in a fixed key order, then the sections)."""
    lines: list[str] = []
    for key in _KEYS:
        value = getattr(card, key)
        if value is None or (key == "parameters" and not value):
            continue
        if key == "parameters":  # one line per parameter, as the cards are written by hand
            lines.append("parameters:")
            for name, v in value.items():
                lines += _entry(name, v, "  ")
        else:
            lines += _entry(key, value, "")
    head = "\n".join(lines)
    body = "\n\n".join(f"## {title}\n{text}" for title, text in card.sections.items())
    return f"---\n{head.rstrip()}\n---\n{body}\n"


def _flow(value: Any) -> str:
    text = str(yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=True))
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _entry(key: str, value: Any, indent: str) -> list[str]:
    """`key: value` in flow style, except a list of mappings: one `- {…}` line per item."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [f"{indent}{key}:"] + [f"{indent}- {_flow(v)}" for v in value]
    return [f"{indent}{key}: {_flow(value)}"]


def save_card(directory: Path, card: SkillCard, entry: dict[str, Any] | None = None) -> Path:
    """Write the card to its file and append `entry` to its history (the designer's record)."""
    path = directory / card.path
    path.write_text(render_card(card), encoding="utf-8")
    if entry is not None:
        hist = directory / HISTORY_DIR / f"{card.id}.jsonl"
        hist.parent.mkdir(parents=True, exist_ok=True)
        with hist.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        card.history.append(entry)
    return path


def load_skill_bank(directory: Path | None) -> list[SkillCard]:
    if directory is None or not directory.is_dir():
        return []
    return sorted((parse_card(p) for p in directory.glob("*.md") if p.name != "README.md"), key=lambda c: c.id)
