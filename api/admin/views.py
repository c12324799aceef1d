"""Pure helpers behind the pages: version diffs, the timeline chart, recall counts, form parsing."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from memsvc.models import EventLog, MemoryCube, MemoryType, MemoryVersion, as_utc

# Fields every version bumps, or bookkeeping an operator does not change: not shown as changes.
_QUIET_FIELDS = {"version", "updated_at", "access_count", "last_accessed_at", "tenant", "content"}
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


# -- version history ------------------------------------------------------------------------

@dataclass
class VersionView:
    version: int
    change: str
    actor: str | None
    changed_at: datetime
    content: str
    content_diff: list[tuple[str, str]] | None  # (equal|insert|delete, text); None = content unchanged
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (name, before, after)


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """Word-level diff of two texts as (op, text) segments, op in equal / delete / insert."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(a[i1:i2])))
            continue
        if op in ("delete", "replace"):
            out.append(("delete", "".join(a[i1:i2])))
        if op in ("insert", "replace"):
            out.append(("insert", "".join(b[j1:j2])))
    return out


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def version_views(versions: list[MemoryVersion]) -> list[VersionView]:
    """Each snapshot with what changed since the one before (newest first)."""
    views: list[VersionView] = []
    prev: dict[str, Any] | None = None
    for v in versions:
        snap = v.snapshot
        content = str(snap.get("content", ""))
        diff = None
        fields: list[tuple[str, str, str]] = []
        if prev is not None:
            if prev.get("content") != snap.get("content"):
                diff = word_diff(str(prev.get("content", "")), content)
            for name in sorted(set(prev) | set(snap)):
                if name not in _QUIET_FIELDS and prev.get(name) != snap.get(name):
                    fields.append((name, _show(prev.get(name)), _show(snap.get(name))))
        views.append(VersionView(v.version, v.change.value, v.actor, v.changed_at, content, diff, fields))
        prev = snap
    return views[::-1]


# -- recall counts --------------------------------------------------------------------------

@dataclass(frozen=True)
class RecallStats:
    by_agents: int
    by_admins: int
    scanned: int
    complete: bool  # every recall event of the user was scanned


def recall_stats(memory_id: str, events: list[EventLog], complete: bool) -> RecallStats:
    """How many logged recalls returned the memory, split by who searched (admin searches are not recorded since `record=False`; older logs may hold some)."""
    agents = admins = 0
    for e in events:
        if memory_id in (e.payload.get("returned") or []):
            if (e.actor or "").startswith("admin:"):
                admins += 1
            else:
                agents += 1
    return RecallStats(agents, admins, len(events), complete)


# -- timeline -------------------------------------------------------------------------------

TYPES = [t.value for t in MemoryType]


@dataclass
class Bar:
    label: str
    x: float
    total: int
    segments: list[tuple[str, float, float, int]]  # (type, y, height, count)
    tick: str | None = None  # text-anchor of the axis label under this bar, None = no label


@dataclass
class Timeline:
    unit: str
    bars: list[Bar]
    width: int
    height: int
    bar_width: float
    max_count: int
    groups: list[tuple[str, list[MemoryCube]]]  # newest bucket first


def when(cube: MemoryCube) -> datetime:
    """When the remembered thing happened, as far as the memory says."""
    moment = as_utc(cube.event_time or cube.valid_from or cube.created_at)
    assert moment is not None
    return moment


def _bucket(moment: datetime, unit: str) -> date:
    day = moment.date()
    if unit == "month":
        return day.replace(day=1)
    if unit == "week":
        return day - timedelta(days=day.weekday())
    return day


def _next(start: date, unit: str) -> date:
    if unit == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=7 if unit == "week" else 1)


def _label(start: date, unit: str) -> str:
    return start.strftime("%Y-%m") if unit == "month" else start.isoformat()


def timeline(cubes: list[MemoryCube], width: int = 960, height: int = 200, max_bars: int = 120) -> Timeline:
    """Memories per day, week or month (whichever keeps the bar count readable), stacked by type."""
    if not cubes:
        return Timeline("day", [], width, height, 0, 0, [])
    moments = [when(c) for c in cubes]
    span = (max(moments) - min(moments)).days
    unit = "day" if span <= 45 else "week" if span <= 366 else "month"
    counts: dict[date, Counter[str]] = {}
    groups: dict[date, list[MemoryCube]] = {}
    for cube, moment in zip(cubes, moments, strict=True):
        b = _bucket(moment, unit)
        counts.setdefault(b, Counter())[cube.type.value] += 1
        groups.setdefault(b, []).append(cube)
    starts = [_bucket(min(moments), unit)]
    while starts[-1] < max(counts) and len(starts) < 2000:
        starts.append(_next(starts[-1], unit))
    starts = starts[-max_bars:]
    max_count = max(sum(c.values()) for c in counts.values())
    plot_h = height - 30
    slot = width / len(starts)
    bars = []
    for i, start in enumerate(starts):
        c = counts.get(start, Counter())
        y = float(plot_h)
        segments = []
        for t in TYPES:
            if c[t]:
                h = plot_h * c[t] / max_count
                y -= h
                segments.append((t, round(y, 1), round(h, 1), c[t]))
        bars.append(Bar(_label(start, unit), round(i * slot, 1), sum(c.values()), segments))
    every = -(-len(bars) // 8)  # at most 8 axis labels, evenly spaced, none overlapping
    for i in range(0, len(bars), every):
        bars[i].tick = "start" if i == 0 else "end" if bars[i].x > width - 90 else "middle"
    ordered = [(_label(b, unit), sorted(g, key=when, reverse=True)) for b, g in sorted(groups.items(), reverse=True)]
    return Timeline(unit, bars, width, height, round(max(1.0, slot * 0.8), 1), max_count, ordered)


# -- form parsing ---------------------------------------------------------------------------

def parse_day(value: str | None, field_name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field_name}: expected a date like 2024-05-31") from None


def day_start(day: date | None, *, next_day: bool = False) -> datetime | None:
    if day is None:
        return None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if next_day else start


def parse_moment(value: str | None, field_name: str) -> datetime | None:
    """A `datetime-local` value (taken as UTC) or ISO 8601; empty means none."""
    if value is None or not value.strip():
        return None
    try:
        return as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(f"{field_name}: expected a date and time like 2024-05-31T14:00") from None


def local_input(value: datetime | None) -> str:
    """The value for a `datetime-local` input, in UTC."""
    dt = as_utc(value)
    return dt.strftime("%Y-%m-%dT%H:%M") if dt else ""
