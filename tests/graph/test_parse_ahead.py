"""ParseAhead: a write's turns parsed on a worker thread while the write embeds them; extraction
reads the same parses it would have made itself."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from spacy.language import Language
from spacy.tokens import Doc

from memsvc.graph.extract import ParseAhead, extract_graph_batch
from memsvc.graph.service import GraphService
from memsvc.ports import MemoryQuery
from memsvc.schemas import MessageIn, WriteRequest
from memsvc.skills.offline import episodic_content
from storage.registry import build_memory_os
from tests.api.conftest import make_settings

TEXTS = [
    "Caroline: I went to the LGBTQ support group in Boston yesterday.",
    "Melanie: My kids loved the camping trip to the Grand Canyon.",
    "Caroline: I'm applying to a counseling program at Columbia University.",
    "Melanie: We painted a sunrise over Lake Michigan together.",
    "Caroline: Thanks, Mel!",
]


def wait_idle(ahead: ParseAhead) -> None:
    deadline = time.monotonic() + 30
    while ahead.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ahead.busy


def shape(doc: Doc) -> list[Any]:
    return [[(t.text, t.lemma_, t.tag_, t.dep_, t.head.i) for t in doc], [(e.text, e.label_) for e in doc.ents]]


def test_docs_are_the_parses_the_pipe_makes_prefetched_or_not_in_the_callers_order(nlp: Language) -> None:
    ahead = ParseAhead(nlp)
    try:
        ahead.prefetch(TEXTS[:3])
        asked = [TEXTS[4], TEXTS[1], TEXTS[3], TEXTS[0], TEXTS[1]]  # unprefetched, prefetched, a repeat
        got = ahead.docs(asked)
        assert [shape(d) for d in got] == [shape(d) for d in nlp.pipe(asked)]
        assert (ahead.hits, ahead.misses) == (2, 3)  # the repeat of TEXTS[1] was prefetched once
        assert ahead.pending() == 1  # TEXTS[2] still waits to be taken
        assert [shape(d) for d in ahead.docs([TEXTS[2]])] == [shape(nlp(TEXTS[2]))]
        assert ahead.pending() == 0
        assert not ahead.busy  # free once the parse it waited for is done
        speakers = ["Caroline", "Melanie", "Caroline", "Melanie", "Caroline"]
        ahead.prefetch(TEXTS)
        assert extract_graph_batch(nlp, TEXTS, speakers, parse=ahead.docs) == extract_graph_batch(nlp, TEXTS, speakers)
    finally:
        ahead.close()


def test_at_most_max_texts_parses_wait_and_the_dropped_ones_are_parsed_when_asked(nlp: Language) -> None:
    ahead = ParseAhead(nlp, max_texts=3)
    try:
        assert ahead.prefetch(TEXTS[:2])
        ahead.docs([])  # nothing taken
        wait_idle(ahead)
        assert ahead.prefetch(TEXTS[2:])
        assert ahead.pending() == 3  # the two oldest dropped
        got = ahead.docs(TEXTS)
        assert [shape(d) for d in got] == [shape(d) for d in nlp.pipe(TEXTS)]
        assert (ahead.hits, ahead.misses, ahead.pending()) == (3, 2, 0)
    finally:
        ahead.close()


class _FailsOnTheWorker:
    """The real pipeline, except that a parse on the parse-ahead thread raises."""

    def __init__(self, nlp: Language) -> None:
        self.nlp = nlp

    def pipe(self, texts: Iterable[str], **kw: Any) -> Iterator[Doc]:
        if threading.current_thread().name.startswith("spacy-ahead"):
            raise RuntimeError("worker parse failed")
        return self.nlp.pipe(texts, **kw)


def test_a_failed_parse_ahead_is_parsed_again_by_the_caller(nlp: Language, caplog: pytest.LogCaptureFixture) -> None:
    ahead = ParseAhead(nlp)
    ahead.nlp = _FailsOnTheWorker(nlp)  # type: ignore[assignment]
    try:
        ahead.prefetch(TEXTS)
        with caplog.at_level(logging.WARNING, logger="memsvc.graph.extract"):
            got = ahead.docs(TEXTS)
        assert [shape(d) for d in got] == [shape(d) for d in nlp.pipe(TEXTS)]
        assert (ahead.hits, ahead.misses, ahead.pending()) == (0, len(TEXTS), 0)
        assert [r.getMessage() for r in caplog.records] == ["a parse ahead failed; parsing its texts again"]  # once per batch
    finally:
        ahead.close()


def test_a_write_parses_its_turns_and_facts_ahead_and_its_graph_reads_those_parses(tmp_path: Path) -> None:
    os_ = build_memory_os(make_settings(tmp_path), start=False)
    try:
        service = os_.indexer.graph_prefetch.__self__  # type: ignore[union-attr]
        assert isinstance(service, GraphService) and service.ahead is not None
        req = WriteRequest(user_id="caroline", infer=True, messages=[
            MessageIn(role="user", name=t.split(": ", 1)[0], content=t.split(": ", 1)[1]) for t in TEXTS])
        os_.add("t", req)
        stored = os_.records.list_memories("t", MemoryQuery(user_id="caroline", limit=100)).items
        assert {episodic_content(m.role, m.name, m.content) for m in req.messages} <= {c.content for c in stored}
        assert len(stored) > len(TEXTS)  # facts were derived as well
        # the graph extracted every memory once; the turns from their parse ahead (the worker was
        # free), the derived facts from theirs if the turns' parse was done when they were derived
        ahead = service.ahead
        assert ahead.hits + ahead.misses == len(stored) and ahead.hits >= len(TEXTS) and ahead.pending() == 0
        assert os_.graph is not None
        names = {e.name for e in os_.graph.entities("t", "caroline").items}
        assert {"Boston", "Columbia University", "Grand Canyon"} <= names
    finally:
        os_.close()
