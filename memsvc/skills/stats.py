"""Per-skill statistics for `GET /v1/skills` and the admin skills page, from the service's own logs.

From the newest write events of a tenant: spans each skill was selected for, memories it wrote,
operations it declined and its executor time and LLM tokens. From the newest recall events: how
often memories each skill wrote were returned (its live recall contribution). The development
ablation (recall within 500 words without the skill) comes from the controller's manifest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from memsvc.models import EventLog
from memsvc.ports import RecordStore


def _events(records: RecordStore, tenant: str, kind: str, limit: int) -> list[EventLog]:
    out: list[EventLog] = []
    cursor = None
    while len(out) < limit:
        page = records.events(tenant, kinds=[kind], limit=min(500, limit - len(out)), cursor=cursor)
        out += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return out


def write_stats(events: Iterable[EventLog]) -> dict[str, dict[str, float]]:
    stats: dict[str, Counter[str]] = {}
    ms: dict[str, float] = {}
    for e in events:
        for skills in e.payload.get("selected", {}).values():
            for s in skills:
                stats.setdefault(s, Counter())["spans_selected"] += 1
        for s, v in e.payload.get("skills", {}).items():
            c = stats.setdefault(s, Counter())
            c["memories_written"] += len(v.get("written", []))
            c["operations"] += int(v.get("operations", 0))
            c["noops"] += len(v.get("noops", []))
            c["prompt_tokens"] += int(v.get("prompt_tokens", 0))
            c["completion_tokens"] += int(v.get("completion_tokens", 0))
            ms[s] = ms.get(s, 0.0) + float(v.get("ms", 0.0))
        for d in e.payload.get("declined", []):
            stats.setdefault(str(d.get("skill")), Counter())["declined"] += 1
    return {s: {**dict(c), "executor_ms": round(ms.get(s, 0.0), 1)} for s, c in stats.items()}


def recall_stats(records: RecordStore, tenant: str, events: Iterable[EventLog]) -> dict[str, int]:
    """Times a memory written by each skill was returned by a recall."""
    returned: Counter[str] = Counter(i for e in events for i in e.payload.get("returned", []))
    by_skill: Counter[str] = Counter()
    ids = list(returned)
    for start in range(0, len(ids), 500):
        for cube in records.get_memories(tenant, ids[start: start + 500]):
            by_skill[cube.written_by or "unknown"] += returned[cube.id]
    return dict(by_skill)


def skill_stats(records: RecordStore, tenant: str, *, limit: int = 2000) -> dict[str, Any]:
    writes = _events(records, tenant, "write", limit)
    recalls = _events(records, tenant, "recall", limit)
    return {"window": {"writes": len(writes), "recalls": len(recalls), "limit": limit},
            "writes": write_stats(writes), "recalled": recall_stats(records, tenant, recalls)}


def ablation_of(manifest_metrics: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per skill, the development recall (WR@500, ER@10) with every skill and without this one."""
    abl = (manifest_metrics or {}).get("ablation", {})
    full = abl.get("all")
    if not full:
        return {}
    out = {}
    for key, m in abl.items():
        if key.startswith("without "):
            out[key[len("without "):]] = {"WR@500_drop": round(full["WR@500"] - m["WR@500"], 4),
                                          "ER@10_drop": round(full["ER@10"] - m["ER@10"], 4)}
    return out
