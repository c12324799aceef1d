"""Deterministic ids and name normalisation shared by the extractor and the graph stores.

`normalize_name` is pure string work (no spaCy), so stores can normalise query names and
entity names the same way the extractor does. The extractor lemmatises a common-noun head
*before* building the display name, so `normalize_name(entity.name)` is the entity's key.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

# Fixed namespace: changing it changes every entity id ever written.
GRAPH_NAMESPACE = uuid.UUID("6f1c2a4e-0c1d-5b7e-9a53-2f4d8e61b0c7")

# Leading words that never change what an entity is ("the cat", "my cat" -> "cat").
LEADING_WORDS = frozenset(
    {
        "a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her", "its",
        "our", "their", "some", "any", "each", "every", "another",
    }
)

_POSSESSIVE = re.compile(r"(?:'s|’s|s'|s’)(?=\s|$)")
_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_name(text: str) -> str:
    """Lowercase, NFKC, possessives and punctuation removed, leading determiners stripped.

    >>> normalize_name("  The LGBTQ support-group's ")
    'lgbtq support group'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _POSSESSIVE.sub(lambda m: "s" if m.group(0).startswith("s") else "", text)
    text = _PUNCT.sub(" ", text)
    words = _SPACE.split(text.strip())
    while len(words) > 1 and words[0] in LEADING_WORDS:
        words = words[1:]
    if words and words[0] in LEADING_WORDS:
        return ""
    return " ".join(w for w in words if w)


def entity_id(tenant: str, user_id: str, norm_name: str) -> str:
    """The entity id of a normalised name inside one user scope (a UUID5 string)."""
    return str(uuid.uuid5(GRAPH_NAMESPACE, "\x1f".join(("entity", tenant, user_id, norm_name))))


def relation_id(
    tenant: str, user_id: str, subject_id: str, predicate: str, object_id: str, memory_id: str | None
) -> str:
    """A relation id that repeats for the same triple from the same memory (idempotent writes)."""
    key = "\x1f".join(("relation", tenant, user_id, subject_id, predicate, object_id, memory_id or ""))
    return str(uuid.uuid5(GRAPH_NAMESPACE, key))
