"""OpenIE with an LLM (HippoRAG's two prompts: named entities, then RDF triples; JSON mode).

Produces the same `GraphExtraction` as the spaCy extractor, so the rest of the graph path
does not care which one ran. Replies are parsed leniently (code fences and text around the
JSON object are ignored; malformed triples are dropped); a reply that is not JSON gives an
empty extraction rather than failing the write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from memsvc.graph.extract import ExtractedEntity, GraphExtraction, GraphRecords, Triple, merge_records
from memsvc.graph.ids import normalize_name
from memsvc.models import MemoryCube
from memsvc.ports import LLM

NER_SYSTEM = "Your task is to extract named entities from the given paragraph. Respond with a JSON list of entities."
NER_EXAMPLE = (
    "Radio City\nRadio City is India's first private FM radio station and was started on 3 July 2001. "
    "It plays Hindi, English and regional songs. Radio City recently forayed into New Media in May 2008 "
    "with the launch of a music portal - PlanetRadiocity.com that offers music related news, videos, songs, "
    "and other music-related features."
)
NER_ANSWER = '{"named_entities": ["Radio City", "India", "3 July 2001", "Hindi", "English", "May 2008", "PlanetRadiocity.com"]}'
TRIPLE_SYSTEM = (
    "Your task is to construct an RDF (Resource Description Framework) graph from the given passages and "
    "named entity lists. Respond with a JSON list of triples, with each triple representing a relationship "
    "in the RDF graph.\n\nPay attention to the following requirements:\n"
    "- Each triple should contain at least one, but preferably two, of the named entities in the list for "
    "each passage.\n- Clearly resolve pronouns to their specific names to maintain clarity."
)
TRIPLE_ANSWER = json.dumps({"triples": [
    ["Radio City", "located in", "India"],
    ["Radio City", "is", "private FM radio station"],
    ["Radio City", "started on", "3 July 2001"],
    ["Radio City", "plays songs in", "Hindi"],
    ["Radio City", "plays songs in", "English"],
    ["Radio City", "forayed into", "New Media"],
    ["Radio City", "launched", "PlanetRadiocity.com"],
    ["PlanetRadiocity.com", "launched in", "May 2008"],
    ["PlanetRadiocity.com", "is", "music portal"],
    ["PlanetRadiocity.com", "offers", "news"],
    ["PlanetRadiocity.com", "offers", "videos"],
    ["PlanetRadiocity.com", "offers", "songs"],
]})

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _triple_user(passage: str, entities: Sequence[str]) -> str:
    return (
        "Convert the paragraph into a JSON dict, it has a named entity list and a triple list.\n"
        f"Paragraph:\n```\n{passage}\n```\n\n{json.dumps({'named_entities': list(entities)})}"
    )


def ner_messages(passage: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": NER_SYSTEM},
        {"role": "user", "content": NER_EXAMPLE},
        {"role": "assistant", "content": NER_ANSWER},
        {"role": "user", "content": passage},
    ]


def triple_messages(passage: str, entities: Sequence[str]) -> list[dict[str, str]]:
    example_ents = json.loads(NER_ANSWER)["named_entities"]
    return [
        {"role": "system", "content": TRIPLE_SYSTEM},
        {"role": "user", "content": _triple_user(NER_EXAMPLE, example_ents)},
        {"role": "assistant", "content": TRIPLE_ANSWER},
        {"role": "user", "content": _triple_user(passage, entities)},
    ]


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a reply (fenced or surrounded by prose); {} when there is none."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        value = json.loads(body[start : end + 1])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_entities(text: str) -> list[str]:
    """`{"named_entities": [...]}` -> the non-empty string entries, deduplicated in order."""
    raw = parse_json_object(text).get("named_entities", [])
    if not isinstance(raw, list):
        return []
    return list(dict.fromkeys(str(x).strip() for x in raw if isinstance(x, str | int | float) and str(x).strip()))


def parse_triples(text: str) -> list[tuple[str, str, str]]:
    """`{"triples": [[s, p, o], ...]}` -> the well-formed triples (three non-empty strings)."""
    raw = parse_json_object(text).get("triples", [])
    if not isinstance(raw, list):
        return []
    out: list[tuple[str, str, str]] = []
    for t in raw:
        if isinstance(t, list) and len(t) == 3 and all(isinstance(x, str | int | float) for x in t):
            s, p, o = (str(x).strip() for x in t)
            if s and p and o:
                out.append((s, p, o))
    return out


def to_extraction(entities: Sequence[str], triples: Sequence[tuple[str, str, str]],
                  text: str | None = None) -> GraphExtraction:
    """Entities (named ones, then triple ends) and triples keyed by normalised names. With the
    passage's `text`, only names grounded in it are kept (every word of the normalised name is a
    word of the normalised passage), and only triples between kept names: a model that copies its
    prompt's example or invents a date writes nothing of it into the user's graph."""
    words = set(normalize_name(text).split()) if text is not None else None

    def keep(key: str) -> bool:
        return bool(key) and (words is None or set(key.split()) <= words)

    ents: dict[str, ExtractedEntity] = {}
    for name in [*entities, *(x for s, _, o in triples for x in (s, o))]:
        key = normalize_name(name)
        if keep(key) and key not in ents:
            ents[key] = ExtractedEntity(name=name, norm_name=key)
    out: dict[Triple, None] = {}
    for s, p, o in triples:
        sk, ok, pred = normalize_name(s), normalize_name(o), " ".join(p.lower().split())
        if keep(sk) and keep(ok) and sk != ok:
            out[Triple(sk, pred, ok)] = None
    return GraphExtraction(entities=tuple(ents.values()), triples=tuple(out))


class OpenIEExtractor:
    """Two LLM calls per text: NER, then triples conditioned on the entities."""

    def __init__(self, llm: LLM, *, max_tokens: int = 1024) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    def extract(self, text: str) -> GraphExtraction:
        ner = self.llm.complete(ner_messages(text), max_tokens=self.max_tokens, json_mode=True)
        entities = parse_entities(ner.text)
        reply = self.llm.complete(triple_messages(text, entities), max_tokens=self.max_tokens, json_mode=True)
        return to_extraction(entities, parse_triples(reply.text), text)

    def __call__(self, cubes: Sequence[MemoryCube]) -> GraphRecords:
        """Fits `GraphService(extractor=...)`: the records of every cube's OpenIE."""
        return merge_records(cubes, [self.extract(c.content) for c in cubes])
