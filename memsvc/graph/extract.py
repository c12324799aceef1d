"""Offline entity and relation extraction with spaCy (no LLM).

Entities are named entities (minus dates, times, amounts and numbers) and salient noun
chunks; relations are (subject, predicate, object) triples read off the dependency parse:
`nsubj -> verb -> dobj | attr | oprd | dative`, or `verb -> prep -> pobj` with the
preposition appended to the predicate. Negation stays in the predicate ("not paint"), a
passive verb reads "be called", an open clausal complement reads "want to visit".
First-person pronouns map to a speaker entity when the caller names the speaker, and a
possessor gives a `have` triple ("my cat" -> (speaker, have, cat)).

The caller loads the `spacy.Language` once and passes it in; `extract_graph_batch` runs
`nlp.pipe`, which is what ingestion of thousands of short turns should use.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from spacy.language import Language
from spacy.tokens import Doc, Span, Token

from memsvc.graph.ids import LEADING_WORDS, entity_id, normalize_name, relation_id
from memsvc.models import Entity, MemoryCube, Mention, Relation

log = logging.getLogger(__name__)

# Named-entity labels that are values, not things to link memories through.
SKIPPED_LABELS = frozenset({"DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"})
SPEAKER_LABEL = "PERSON"
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself"})
HAVE = "have"

_SUBJECTS = frozenset({"nsubj", "nsubjpass", "csubj"})
_OBJECTS = frozenset({"dobj", "attr", "oprd", "dative", "obj"})
_PREPS = frozenset({"prep", "agent"})
_DROP_DEPS = frozenset({"det", "predet", "case", "punct", "cc", "preconj"})


@dataclass(frozen=True)
class ExtractedEntity:
    """An entity of one text: display name (common-noun head lemmatised) and its key."""

    name: str
    norm_name: str
    label: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Triple:
    """A fact between two entities, named by their normalised names."""

    subject: str
    predicate: str
    object: str


@dataclass(frozen=True)
class GraphExtraction:
    entities: tuple[ExtractedEntity, ...]
    triples: tuple[Triple, ...]

    def names(self) -> list[str]:
        """The normalised names, e.g. to seed `GraphStore.find_entities` from a query."""
        return [e.norm_name for e in self.entities]


class GraphRecords(NamedTuple):
    entities: list[Entity]
    relations: list[Relation]
    mentions: list[Mention]


def extract_graph(nlp: Language, text: str, speaker: str | None = None) -> GraphExtraction:
    """Entities and triples of one text; `speaker` is who "I"/"me"/"my" refer to."""
    return graph_from_doc(nlp(text), speaker)


Parse = Callable[[Sequence[str]], Sequence[Doc]]
"""texts -> their parsed `Doc`s, in order (`nlp.pipe`, or `ParseAhead.docs`)."""


def extract_graph_batch(
    nlp: Language,
    texts: Sequence[str],
    speakers: Sequence[str | None] | None = None,
    *,
    batch_size: int = 256,
    parse: Parse | None = None,
) -> list[GraphExtraction]:
    """`extract_graph` over many texts through `nlp.pipe` (one result per text, in order); `parse`
    replaces the pipe (docs parsed ahead)."""
    if speakers is None:
        speakers = [None] * len(texts)
    if len(speakers) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(speakers)} speakers")
    docs = parse(texts) if parse is not None else nlp.pipe(texts, batch_size=batch_size)
    return [graph_from_doc(doc, speaker) for doc, speaker in zip(docs, speakers, strict=True)]


class ParseAhead:
    """Parses texts on a worker thread ahead of their graph extraction.

    The write path knows a request's turns before it embeds them, and parses them only after it
    committed them (the graph is derived from SQL): `prefetch` starts the parse when the request
    arrives, so spaCy on one core and the embedder on the other run at once (419 LoCoMo turns in
    batches of 50 on two cores: 3.7 s for both instead of 6.0 s one after the other). One batch at
    a time: while the worker is busy, `prefetch` declines. `docs` takes a
    text's prefetched parse if there is one (waiting for it) and parses the rest itself, so a text
    never prefetched, evicted, or whose parse failed is extracted exactly as without this class.
    At most `max_texts` parses wait to be taken; the oldest are dropped beyond that."""

    def __init__(self, nlp: Language, *, max_texts: int = 1024, batch_size: int = 256) -> None:
        self.nlp = nlp
        self.max_texts = max_texts
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spacy-ahead")
        self._lock = threading.Lock()
        self._ahead: OrderedDict[str, list[tuple[Future[list[Doc]], int]]] = OrderedDict()
        self._waiting = 0
        self._busy = False  # a batch is being parsed
        self.hits = 0  # texts `docs` took from a parse ahead
        self.misses = 0  # texts it parsed itself

    def prefetch(self, texts: Sequence[str]) -> bool:
        """Start parsing `texts` unless the worker is busy with an earlier batch (then the caller parses
        them when it extracts, as without this class: under concurrent writes a queue behind one worker
        would serialise every write's parse). Whether it started."""
        texts = list(dict.fromkeys(t for t in texts if t))
        with self._lock:
            if not texts or self._busy:
                return False
            self._busy = True
        try:
            future = self._pool.submit(self._parse, texts)
        except RuntimeError:  # shut down
            with self._lock:
                self._busy = False
            return False
        with self._lock:
            for i, t in enumerate(texts):
                self._ahead.setdefault(t, []).append((future, i))
                self._ahead.move_to_end(t)
                self._waiting += 1
            while self._waiting > self.max_texts:
                _, dropped = self._ahead.popitem(last=False)
                self._waiting -= len(dropped)
        return True

    def _parse(self, texts: list[str]) -> list[Doc]:
        try:
            return list(self.nlp.pipe(texts, batch_size=self.batch_size))
        finally:  # free before the result is set: whoever waited for it may prefetch again at once
            with self._lock:
                self._busy = False

    def _take(self, text: str) -> tuple[Future[list[Doc]], int] | None:
        with self._lock:
            queued = self._ahead.get(text)
            if not queued:
                return None
            found = queued.pop(0)
            self._waiting -= 1
            if not queued:
                del self._ahead[text]
            return found

    def docs(self, texts: Sequence[str]) -> list[Doc]:
        """The parses of `texts`, in order: prefetched ones taken (waited for), the rest parsed here."""
        out: list[Doc | None] = [None] * len(texts)
        failed: set[int] = set()  # futures already reported
        for i, text in enumerate(texts):
            found = self._take(text)
            if found is None:
                continue
            future, at = found
            try:
                out[i] = future.result()[at]
            except Exception:  # noqa: BLE001 - the text is parsed below, as if never prefetched
                if id(future) not in failed:
                    failed.add(id(future))
                    log.warning("a parse ahead failed; parsing its texts again", exc_info=True)
        missing = [i for i, d in enumerate(out) if d is None]
        with self._lock:
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            for i, doc in zip(missing, self.nlp.pipe([texts[i] for i in missing], batch_size=self.batch_size),
                              strict=True):
                out[i] = doc
        return [d for d in out if d is not None]

    @property
    def busy(self) -> bool:
        """Whether the worker is parsing a batch (a `prefetch` now declines)."""
        with self._lock:
            return self._busy

    def pending(self) -> int:
        """Prefetched parses not yet taken."""
        with self._lock:
            return self._waiting

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def graph_from_doc(doc: Doc, speaker: str | None = None) -> GraphExtraction:
    """Extraction from an already parsed `Doc` (needs tagger, parser, lemmatizer and NER)."""
    acc = _Accumulator()
    token_keys: dict[int, str] = {}
    speaker_name = speaker.strip() if speaker else ""
    speaker_key = normalize_name(speaker_name)
    if speaker_key:
        for tok in doc:
            if tok.lower_ in FIRST_PERSON and tok.pos_ == "PRON":
                token_keys[tok.i] = acc.add(speaker_name, speaker_key, SPEAKER_LABEL, None)

    for ent in doc.ents:
        if ent.label_ in SKIPPED_LABELS:
            continue
        tokens = _strip(list(ent))
        if not _salient(tokens):
            continue
        display = _text(tokens, lemma_head=None)
        key = acc.add(display, normalize_name(display), ent.label_, _text(tokens, None))
        if key:
            for tok in ent:
                token_keys.setdefault(tok.i, key)

    possessions: list[tuple[int, int]] = []
    for chunk in doc.noun_chunks:
        root = chunk.root
        if root.i in token_keys or root.pos_ == "PRON" or root.ent_type_ in SKIPPED_LABELS:
            _note_possessors(chunk, possessions)
            continue
        # Possessors are entities of their own; counts ("3 kids") are not part of the name.
        owned = {t.i for p in chunk if p.dep_ == "poss" for t in p.subtree}
        tokens = _strip([t for t in chunk if t.i not in owned and t.dep_ != "nummod"])
        if not _salient(tokens):
            continue
        head = root if root.pos_ == "NOUN" and not root.ent_type_ else None
        display = _text(tokens, lemma_head=head)
        key = acc.add(display, normalize_name(display), None, _text(tokens, None))
        if key:
            token_keys[root.i] = key
            for tok in tokens:
                token_keys.setdefault(tok.i, key)
        _note_possessors(chunk, possessions)

    # A noun possessor ("my sister's dogs") is an entity of its own.
    for owner_i, _ in possessions:
        owner = doc[owner_i]
        if owner_i in token_keys or owner.pos_ not in ("NOUN", "PROPN"):
            continue
        tokens = _strip([t for t in owner.subtree if t.dep_ != "poss" or t.i == owner_i])
        tokens = [t for t in tokens if t.i == owner_i or t.head.i == owner_i]
        if _salient(tokens):
            head = owner if owner.pos_ == "NOUN" and not owner.ent_type_ else None
            display = _text(tokens, lemma_head=head)
            key = acc.add(display, normalize_name(display), None, _text(tokens, None))
            if key:
                token_keys[owner_i] = key

    triples: dict[Triple, None] = {}
    for owner_i, owned_i in possessions:
        _add_triple(triples, token_keys.get(owner_i), HAVE, token_keys.get(owned_i))
    for tok in doc:
        if tok.pos_ in ("VERB", "AUX"):
            _verb_triples(tok, token_keys, triples)
    return GraphExtraction(entities=acc.entities(), triples=tuple(triples))


def to_records(
    extraction: GraphExtraction,
    tenant: str,
    user_id: str,
    memory_id: str,
    *,
    valid_from: datetime | None = None,
) -> GraphRecords:
    """The store records of one memory's extraction: entities, relations, one mention each.

    Ids are deterministic, so writing the same memory twice changes nothing.
    """
    ids = {e.norm_name: entity_id(tenant, user_id, e.norm_name) for e in extraction.entities}
    entities = [
        Entity(
            id=ids[e.norm_name], tenant=tenant, user_id=user_id, name=e.name, label=e.label,
            aliases=list(e.aliases), mention_count=1,
        )
        for e in extraction.entities
    ]
    relations = []
    for t in extraction.triples:
        s, o = ids[t.subject], ids[t.object]
        relations.append(
            Relation(
                id=relation_id(tenant, user_id, s, t.predicate, o, memory_id), tenant=tenant,
                user_id=user_id, subject_id=s, predicate=t.predicate, object_id=o,
                memory_id=memory_id, valid_from=valid_from,
            )
        )
    mentions = [
        Mention(tenant=tenant, user_id=user_id, memory_id=memory_id, entity_id=ids[e.norm_name])
        for e in extraction.entities
    ]
    return GraphRecords(entities, relations, mentions)


class _Accumulator:
    """Entities by normalised name, in first-seen order; later surface forms become aliases."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._labels: dict[str, str | None] = {}
        self._aliases: dict[str, dict[str, None]] = {}

    def add(self, display: str, key: str, label: str | None, surface: str | None) -> str:
        if not key:
            return ""
        if key not in self._names:
            self._names[key] = display
            self._labels[key] = label
            self._aliases[key] = {}
        elif self._labels[key] is None and label is not None:
            self._labels[key] = label
        for form in (display, surface):
            if form and form != self._names[key]:
                self._aliases[key][form] = None
        return key

    def entities(self) -> tuple[ExtractedEntity, ...]:
        return tuple(
            ExtractedEntity(name, key, self._labels[key], tuple(sorted(self._aliases[key])))
            for key, name in self._names.items()
        )


def _strip(tokens: list[Token]) -> list[Token]:
    """Drop determiners, possessive markers, punctuation and leading possessive pronouns."""
    kept = [t for t in tokens if t.dep_ not in _DROP_DEPS and not t.is_punct]
    while kept and (kept[0].lower_ in LEADING_WORDS or (kept[0].pos_ == "PRON" and kept[0].dep_ == "poss")):
        kept = kept[1:]
    return kept


def _salient(tokens: Sequence[Token]) -> bool:
    """At least one alphabetic, non-stop-word, non-pronoun token."""
    return any(t.is_alpha and not t.is_stop and not t.like_num and t.pos_ != "PRON" for t in tokens)


def _text(tokens: Sequence[Token], lemma_head: Token | None) -> str:
    parts = []
    for i, tok in enumerate(tokens):
        word = tok.lemma_ if lemma_head is not None and tok.i == lemma_head.i and tok.lemma_ else tok.text
        parts.append(word + (tok.whitespace_ if i < len(tokens) - 1 else ""))
    return "".join(parts).strip()


def _note_possessors(chunk: Span, out: list[tuple[int, int]]) -> None:
    for tok in chunk:
        if tok.dep_ == "poss" and tok.head.i == chunk.root.i:
            out.append((tok.i, chunk.root.i))
        elif tok.dep_ == "poss" and tok.head.dep_ == "poss":
            out.append((tok.i, tok.head.i))


def _conjuncts(tok: Token) -> list[Token]:
    return [tok, *(c for c in tok.conjuncts if c.i > tok.i)]


def _subjects(verb: Token) -> list[Token]:
    subs = [c for c in verb.children if c.dep_ in _SUBJECTS]
    if not subs and verb.dep_ in ("conj", "xcomp", "advcl") and verb.head.pos_ in ("VERB", "AUX"):
        return _subjects(verb.head)
    return [s for sub in subs for s in _conjuncts(sub)]


def _predicate(verb: Token) -> str:
    children = list(verb.children)
    neg = any(c.dep_ == "neg" for c in children)
    passive = any(c.dep_ in ("auxpass", "nsubjpass") for c in children)
    word = f"be {verb.lower_}" if passive else verb.lemma_.lower()
    words = [word, *(c.lower_ for c in children if c.dep_ == "prt")]
    if verb.dep_ == "xcomp" and verb.head.pos_ in ("VERB", "AUX"):
        to = [c.lower_ for c in children if c.dep_ == "aux" and c.lower_ == "to"]
        words = [_predicate(verb.head), *to, *words]
        neg = False  # already inside the governing verb's predicate
    return " ".join((["not"] if neg else []) + words)


def _verb_triples(verb: Token, keys: dict[int, str], out: dict[Triple, None]) -> None:
    subjects = [keys.get(s.i) for s in _subjects(verb)]
    subjects_found = [s for s in subjects if s]
    if not subjects_found:
        return
    pred = _predicate(verb)
    targets: list[tuple[str, Token]] = []
    for child in verb.children:
        if child.dep_ in _OBJECTS:
            targets.extend((pred, o) for o in _conjuncts(child))
        elif child.dep_ in _PREPS:
            for pobj in (g for g in child.children if g.dep_ == "pobj"):
                targets.extend((f"{pred} {child.lower_}", o) for o in _conjuncts(pobj))
    for subject in subjects_found:
        for predicate, obj in targets:
            _add_triple(out, subject, predicate, keys.get(obj.i))


def _add_triple(out: dict[Triple, None], subject: str | None, predicate: str, obj: str | None) -> None:
    if subject and obj and subject != obj:
        out[Triple(subject, predicate, obj)] = None


def cube_records(
    nlp: Language,
    cubes: Sequence[MemoryCube],
    speaker: Callable[[MemoryCube], str | None] | None = None,
    *,
    batch_size: int = 256,
    parse: Parse | None = None,
) -> GraphRecords:
    """Records of many cubes in one `nlp.pipe` pass (or `parse`); an entity seen in several cubes appears once.

    Fits `memsvc.indexer.GraphExtractor` via `functools.partial(cube_records, nlp)`.
    `speaker(cube)` names who "I" is in that cube (e.g. the user's display name).
    """
    speakers = [speaker(c) if speaker else None for c in cubes]
    extractions = extract_graph_batch(nlp, [c.content for c in cubes], speakers, batch_size=batch_size, parse=parse)
    return merge_records(cubes, extractions)


def merge_records(cubes: Sequence[MemoryCube], extractions: Sequence[GraphExtraction]) -> GraphRecords:
    """Store records of each cube's extraction (any extractor); an entity of several cubes appears once."""
    merged: dict[str, Entity] = {}
    out = GraphRecords([], [], [])
    for cube, extraction in zip(cubes, extractions, strict=True):
        recs = to_records(extraction, cube.tenant, cube.user_id, cube.id, valid_from=cube.valid_from)
        for e in recs.entities:
            seen = merged.get(e.id)
            if seen is None:
                merged[e.id] = e
            else:
                forms = dict.fromkeys([*seen.aliases, *e.aliases, e.name])
                aliases = [a for a in forms if a != seen.name]
                merged[e.id] = seen.model_copy(
                    update={"aliases": aliases, "label": seen.label or e.label,
                            "mention_count": seen.mention_count + e.mention_count}
                )
        out.relations.extend(recs.relations)
        out.mentions.extend(recs.mentions)
    out.entities.extend(merged.values())
    return out
