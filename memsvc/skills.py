"""The skill bank: Markdown cards with front matter, loaded from a directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

_FRONT = re.compile(r"\A---\n(.*?)\n---\n(.*)\Z", re.S)
_SECTION = re.compile(r"^## +(.+)$", re.M)


class SkillCard(BaseModel):
    id: str
    version: int
    operations: list[str]
    target_types: list[str]
    executor: str = Field(description="offline (built in) or llm")
    sections: dict[str, str]
    path: str


def _front_matter(text: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            data[key.strip()] = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        else:
            data[key.strip()] = value
    return data


def parse_card(path: Path) -> SkillCard:
    text = path.read_text(encoding="utf-8")
    m = _FRONT.match(text)
    if not m:
        raise ValueError(f"{path}: missing front matter")
    front = _front_matter(m.group(1))
    body = m.group(2)
    heads = list(_SECTION.finditer(body))
    sections = {
        h.group(1).strip(): body[h.end(): heads[i + 1].start() if i + 1 < len(heads) else len(body)].strip()
        for i, h in enumerate(heads)
    }
    return SkillCard(
        id=front["id"], version=int(front["version"]), operations=list(front["operations"]),
        target_types=list(front["target_types"]), executor=front.get("executor", "offline"),
        sections=sections, path=path.name,
    )


def load_skill_bank(directory: Path | None) -> list[SkillCard]:
    if directory is None or not directory.is_dir():
        return []
    return sorted((parse_card(p) for p in directory.glob("*.md") if p.name != "README.md"), key=lambda c: c.id)
