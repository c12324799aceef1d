"""Typed records shared by the loaders, the data root, date parsing and dataset checksums."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATA_ENV = "MEMSVC_DATA"


def default_data_root() -> Path:
    """`$MEMSVC_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class Turn:
    """One message of a conversation; `id` is what evidence refers to (unique per conversation)."""

    id: str
    text: str
    speaker: str | None = None
    role: str = "user"
    timestamp: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Session:
    id: str
    timestamp: datetime | None
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Conversation:
    """Dated sessions of turns between speakers (one user scope when written to memsvc)."""

    id: str
    sessions: tuple[Session, ...]
    speakers: tuple[str, ...] = ()

    def turns(self) -> Iterator[Turn]:
        for session in self.sessions:
            yield from session.turns


@dataclass(frozen=True)
class Question:
    """A question about one conversation (`scene`), with the ids of the turns that answer it."""

    id: str
    scene: str
    text: str
    category: str
    evidence: tuple[str, ...]
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Document:
    """A corpus record of a retrieval task (trajectory, API document, passage, narrative record)."""

    id: str
    text: str
    title: str = ""
    timestamp: datetime | None = None
    session: str | None = None


@dataclass(frozen=True)
class Dataset:
    """What a loader returns: conversations or a corpus, questions, and the files it read."""

    name: str
    questions: tuple[Question, ...]
    conversations: tuple[Conversation, ...] = ()
    corpus: dict[str, tuple[Document, ...]] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


# --- dates -------------------------------------------------------------------------------------

_FORMATS = (
    "%I:%M %p on %d %B, %Y",  # LoCoMo / TMD session: 1:56 pm on 8 May, 2023
    "%I:%M:%S %p on %A %d %B, %Y",  # TMD turn: 02:36:05 AM on Tuesday 08 May, 2023
    "%d.%m.%Y, %H:%M:%S",  # REALTALK: 29.12.2023, 22:42:04
    "%Y-%m-%d %H:%M:%S",  # KnowMe-Bench: 1969-08-15 14:00:00
    "%Y/%m/%d (%a) %H:%M",  # LongMemEval: 2023/05/20 (Sat) 02:21
)


def parse_datetime(text: str | None) -> datetime | None:
    """Parse the benchmarks' date formats into an aware UTC datetime (the data has no zones)."""
    if not text:
        return None
    value = " ".join(str(text).split())
    for fmt in _FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_SESSION_KEY = re.compile(r"session_(\d+)")


def session_numbers(record: dict[str, Any]) -> list[int]:
    """Numbers N of the `session_N` keys that hold turns, in numeric order."""
    found = (_SESSION_KEY.fullmatch(key) for key in record)
    return sorted(int(m.group(1)) for m in found if m and isinstance(record[m.group(0)], list))


def answer_text(value: Any) -> str | None:
    return None if value is None else str(value)
