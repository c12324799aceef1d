"""Temporal facts: validity of relations at a time, and supersession of single-valued facts.

Rules (kept deliberately small):

* A relation is valid at `t` when `valid_from` is unset or `<= t`, and `valid_to` is unset or `> t`.
* Some predicates are single-valued per subject: a person lives in one place, works for one
  employer, is married to one person at a time. Their predicates are grouped into families
  (`FAMILIES`: "live in" and "move to" are both *residence*). Negated predicates ("not live in")
  belong to no family.
* For one subject and one family, a dated relation is closed by the first *strictly later*
  dated relation with a *different* object: its `valid_to` becomes that relation's
  `valid_from`. Restating the same object closes nothing. Undated relations neither close nor
  are closed (their order is unknown). Closed relations are kept, never deleted.
* Synonym edges and all other predicates are never superseded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from memsvc.models import Relation, as_utc

# The single-valued slots, one vocabulary for both levels of supersession: a fact cube's `_slot`
# (memsvc.write.extract) and a relation's predicate family here.
RESIDENCE, EMPLOYER, SPOUSE = "residence", "employer", "spouse"

FAMILIES: dict[str, frozenset[str]] = {
    RESIDENCE: frozenset({
        "live in", "live at", "move to", "move into", "relocate to", "reside in", "settle in", "be based in",
    }),
    EMPLOYER: frozenset({"work at", "work for", "be employed by", "be employed at"}),
    SPOUSE: frozenset({"marry", "be married to", "wed"}),
}
_FAMILY_OF = {p: fam for fam, preds in FAMILIES.items() for p in preds}


def predicate_family(predicate: str) -> str | None:
    """The single-valued family a predicate belongs to, or None."""
    return _FAMILY_OF.get(" ".join(predicate.lower().split()))


def valid_at(relation: Relation, t: datetime) -> bool:
    """Whether the relation holds at `t` (see module doc)."""
    when = as_utc(t)
    assert when is not None
    start, end = as_utc(relation.valid_from), as_utc(relation.valid_to)
    return (start is None or start <= when) and (end is None or end > when)


def supersede(existing: Iterable[Relation], new: Sequence[Relation]) -> tuple[list[Relation], list[Relation]]:
    """Apply the supersession rules to a write.

    Returns `(new', closed)`: `new'` is `new` in order, a relation closed (by a stored relation
    that is later in time) carrying its `valid_to`; `closed` holds copies of stored, still open
    relations that a new relation closes (same id, `valid_to` set), for the store to apply.
    """
    groups: dict[tuple[str, str], list[tuple[Relation, bool]]] = defaultdict(list)
    touched: set[tuple[str, str]] = set()
    for r in new:
        fam = predicate_family(r.predicate)
        if fam is not None and r.valid_from is not None:
            touched.add((r.subject_id, fam))
    subjects = {subject for subject, _ in touched}
    if not subjects:
        return list(new), []
    for r in existing:  # a scope's every relation: only the touched subjects' are looked at
        if r.subject_id in subjects and r.valid_from is not None:
            fam = predicate_family(r.predicate)
            if fam is not None and (r.subject_id, fam) in touched:
                groups[(r.subject_id, fam)].append((r, False))
    for r in new:
        fam = predicate_family(r.predicate)
        if fam is not None and r.valid_from is not None:
            groups[(r.subject_id, fam)].append((r, True))
    ends: dict[str, datetime] = {}
    for key in touched:
        timeline = sorted(groups[key], key=lambda x: as_utc(x[0].valid_from))  # type: ignore[arg-type, return-value]
        for i, (r, _) in enumerate(timeline):
            if r.valid_to is not None:
                continue
            start = as_utc(r.valid_from)
            for later, _ in timeline[i + 1 :]:
                later_start = as_utc(later.valid_from)
                assert start is not None and later_start is not None
                if later_start > start and later.object_id != r.object_id:
                    ends[r.id] = later_start
                    break
    new_ids = {r.id for r in new}
    out = [r.model_copy(update={"valid_to": ends[r.id]}) if r.id in ends else r for r in new]
    closed = [
        r.model_copy(update={"valid_to": ends[r.id]})
        for key in touched for r, is_new in groups[key]
        if not is_new and r.id in ends and r.id not in new_ids
    ]
    return out, closed
