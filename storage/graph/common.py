"""What both graph stores share: input checks, alias merging, cursors, ordering rules."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from memsvc.errors import InvalidInput
from memsvc.graph.ids import normalize_name
from memsvc.models import Entity, Mention, Relation

CHUNK = 500  # ids per IN (...) list or UNWIND batch
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The id to page after ("" for the first page); a malformed cursor is bad input."""
    if not cursor:
        return ""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = json.loads(raw)["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("malformed cursor") from exc
    if not isinstance(after, str):
        raise InvalidInput("malformed cursor")
    return after


def check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidInput("limit must be at least 1")


def check_scope(
    tenant: str, user_id: str, entities: Sequence[Entity], relations: Sequence[Relation],
    mentions: Sequence[Mention],
) -> None:
    """Every record of an upsert must belong to the scope it is written to."""
    scopes = {(r.tenant, r.user_id) for r in entities}
    scopes |= {(r.tenant, r.user_id) for r in relations} | {(r.tenant, r.user_id) for r in mentions}
    for other_tenant, other_user in scopes - {(tenant, user_id)}:
        raise InvalidInput(
            "graph record outside the scope being written",
            details={"tenant": other_tenant, "user_id": other_user},
        )


def merge_aliases(name: str, aliases: Iterable[str], new: Iterable[str]) -> list[str]:
    """Existing aliases then new ones, dropping the name and case-insensitive repeats."""
    seen = {name.casefold()}
    out = []
    for alias in (*aliases, *new):
        key = alias.strip().casefold()
        if key and key not in seen:
            seen.add(key)
            out.append(alias.strip())
    return out


def dedupe_entities(entities: Sequence[Entity]) -> list[Entity]:
    """One entity per id: the first name and label win, later names and aliases become aliases."""
    merged: dict[str, Entity] = {}
    for e in entities:
        seen = merged.get(e.id)
        if seen is None:
            merged[e.id] = e.model_copy(update={"aliases": merge_aliases(e.name, e.aliases, [])})
        else:
            merged[e.id] = seen.model_copy(
                update={
                    "aliases": merge_aliases(seen.name, seen.aliases, [e.name, *e.aliases]),
                    "label": seen.label or e.label,
                }
            )
    return list(merged.values())


def dedupe_mentions(mentions: Sequence[Mention]) -> list[Mention]:
    """One mention per (memory, entity): the last weight wins."""
    return list({(m.memory_id, m.entity_id): m for m in mentions}.values())


def dedupe_relations(relations: Sequence[Relation]) -> list[Relation]:
    """One relation per id: the first wins (a stored relation is never rewritten)."""
    out: dict[str, Relation] = {}
    for r in relations:
        out.setdefault(r.id, r)
    return list(out.values())


def referenced_ids(relations: Sequence[Relation], mentions: Sequence[Mention]) -> set[str]:
    return {r.subject_id for r in relations} | {r.object_id for r in relations} | {
        m.entity_id for m in mentions
    }


def alias_keys(entity_name: str, aliases: Iterable[str]) -> set[str]:
    """The normalised names an entity answers to in `find_entities`."""
    keys = {normalize_name(entity_name), *(normalize_name(a) for a in aliases)}
    keys.discard("")
    return keys


def order_found(names: Sequence[str], found: Iterable[Entity]) -> list[Entity]:
    """Entities in the order of the first query name they match, then by id."""
    wanted = [n for n in dict.fromkeys(normalize_name(x) for x in names) if n]
    rank = {n: i for i, n in enumerate(wanted)}

    def key(e: Entity) -> tuple[int, str]:
        hits = [rank[k] for k in alias_keys(e.name, e.aliases) if k in rank]
        return (min(hits) if hits else len(rank), e.id)

    return sorted({e.id: e for e in found}.values(), key=key)


def missing_entities(tenant: str, user_id: str, ids: Iterable[str]) -> InvalidInput:
    return InvalidInput(
        "relations or mentions refer to unknown entities",
        details={"tenant": tenant, "user_id": user_id, "entity_ids": sorted(ids)[:20]},
    )
