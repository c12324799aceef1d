"""spaCy extraction: exact entities, normalised names and triples for known sentences."""

from __future__ import annotations

import pytest
from spacy.language import Language

from memsvc.graph.extract import (
    ExtractedEntity,
    Triple,
    cube_records,
    extract_graph,
    extract_graph_batch,
    to_records,
)
from memsvc.graph.ids import entity_id, normalize_name, relation_id
from memsvc.models import MemoryCube, MemoryType


def names(nlp: Language, text: str, speaker: str | None = None) -> list[str]:
    return extract_graph(nlp, text, speaker).names()


def triples(nlp: Language, text: str, speaker: str | None = None) -> set[tuple[str, str, str]]:
    return {(t.subject, t.predicate, t.object) for t in extract_graph(nlp, text, speaker).triples}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The LGBTQ support-group's ", "lgbtq support group"),
        ("Alice's", "alice"),
        ("James'", "james"),
        ("My  Cat!", "cat"),
        ("the", ""),
        ("ÉCOLE  Normale", "école normale"),
    ],
)
def test_normalize_name(text: str, expected: str) -> None:
    assert normalize_name(text) == expected


def test_ids_are_deterministic_per_scope() -> None:
    assert entity_id("t", "u", "berlin") == entity_id("t", "u", "berlin")
    assert len({entity_id("t", "u", "berlin"), entity_id("t", "v", "berlin"), entity_id("s", "u", "berlin")}) == 3
    assert relation_id("t", "u", "a", "p", "b", "m1") != relation_id("t", "u", "a", "p", "b", "m2")


def test_speaker_moves_to_berlin(nlp: Language) -> None:
    x = extract_graph(nlp, "I moved to Berlin in May 2023", speaker="Alice")
    assert x.entities == (ExtractedEntity("Alice", "alice", "PERSON"), ExtractedEntity("Berlin", "berlin", "GPE"))
    assert x.triples == (Triple("alice", "move to", "berlin"),)


def test_first_person_without_speaker_is_dropped(nlp: Language) -> None:
    assert names(nlp, "I moved to Berlin in May 2023") == ["berlin"]
    assert triples(nlp, "I moved to Berlin in May 2023") == set()


def test_noun_chunk_entity_and_prepositional_predicate(nlp: Language) -> None:
    text = "Caroline went to the LGBTQ support group yesterday."
    assert names(nlp, text) == ["caroline", "lgbtq support group"]
    assert triples(nlp, text) == {("caroline", "go to", "lgbtq support group")}


def test_possession_and_passive(nlp: Language) -> None:
    assert names(nlp, "My cat is called Miso", "Alice") == ["alice", "miso", "cat"]
    assert triples(nlp, "My cat is called Miso", "Alice") == {("alice", "have", "cat"), ("cat", "be called", "miso")}


def test_negation_stays_in_the_predicate(nlp: Language) -> None:
    assert triples(nlp, "Melanie didn't paint the lake sunrise.") == {("melanie", "not paint", "lake sunrise")}
    assert triples(nlp, "I don't want to visit Paris", "Alice") == {("alice", "not want to visit", "paris")}


def test_plural_head_is_lemmatised_and_kept_as_alias(nlp: Language) -> None:
    x = extract_graph(nlp, "My sister's dogs love the park.", speaker="Alice")
    assert x.names() == ["alice", "dog", "park", "sister"]
    dog = next(e for e in x.entities if e.norm_name == "dog")
    assert (dog.name, dog.label, dog.aliases) == ("dog", None, ("dogs",))
    assert set(x.triples) == {
        Triple("alice", "have", "sister"), Triple("sister", "have", "dog"), Triple("dog", "love", "park"),
    }


def test_conjoined_verbs_and_objects(nlp: Language) -> None:
    text = "I started a new job at Microsoft and moved to Seattle."  # "at" attaches to "job"
    assert triples(nlp, text, "Alice") == {("alice", "start", "new job"), ("alice", "move to", "seattle")}
    assert triples(nlp, "I gave up smoking and worked at Microsoft.", "Alice") == {
        ("alice", "give up", "smoking"), ("alice", "work at", "microsoft"),
    }
    assert triples(nlp, "I want to visit Paris and Rome next year.", "Alice") == {
        ("alice", "want to visit", "paris"), ("alice", "want to visit", "rome"),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I have 3 kids and something else.", ["kid"]),
        ("It was 2023.", []),
        ("They saw it with them.", []),
        ("We paid $40 for 12 tickets on Monday.", ["ticket"]),
        ("", []),
    ],
)
def test_pronouns_numbers_and_stop_words_are_not_entities(nlp: Language, text: str, expected: list[str]) -> None:
    assert names(nlp, text) == expected


def test_batch_matches_single_calls(nlp: Language) -> None:
    texts = ["I moved to Berlin in May 2023", "My cat is called Miso", "Caroline went to the LGBTQ support group."]
    speakers = ["Alice", "Alice", None]
    assert extract_graph_batch(nlp, texts, speakers, batch_size=2) == [
        extract_graph(nlp, t, s) for t, s in zip(texts, speakers, strict=True)
    ]
    assert extract_graph_batch(nlp, texts) == [extract_graph(nlp, t) for t in texts]
    with pytest.raises(ValueError):
        extract_graph_batch(nlp, texts, ["Alice"])


def test_to_records_uses_deterministic_ids(nlp: Language) -> None:
    x = extract_graph(nlp, "I moved to Berlin in May 2023", speaker="Alice")
    recs = to_records(x, "t", "u", "m1")
    alice, berlin = entity_id("t", "u", "alice"), entity_id("t", "u", "berlin")
    assert [(e.id, e.name, e.mention_count) for e in recs.entities] == [(alice, "Alice", 1), (berlin, "Berlin", 1)]
    [r] = recs.relations
    assert (r.id, r.subject_id, r.predicate, r.object_id, r.memory_id) == (
        relation_id("t", "u", alice, "move to", berlin, "m1"), alice, "move to", berlin, "m1",
    )
    assert [(m.memory_id, m.entity_id, m.weight) for m in recs.mentions] == [("m1", alice, 1.0), ("m1", berlin, 1.0)]
    assert to_records(x, "t", "u", "m1") == recs


def test_cube_records_merge_entities_across_cubes(nlp: Language) -> None:
    cubes = [
        MemoryCube(id="m1", tenant="t", user_id="u", type=MemoryType.EPISODIC, content="I moved to Berlin."),
        MemoryCube(id="m2", tenant="t", user_id="u", type=MemoryType.EPISODIC, content="I love Berlin's parks."),
    ]
    recs = cube_records(nlp, cubes, speaker=lambda c: "Alice")
    by_name = {e.name: e for e in recs.entities}
    assert set(by_name) == {"Alice", "Berlin", "park"}
    assert by_name["Alice"].mention_count == 2 and by_name["Berlin"].mention_count == 2
    assert sorted((m.memory_id, m.entity_id) for m in recs.mentions) == sorted(
        [("m1", entity_id("t", "u", "alice")), ("m1", entity_id("t", "u", "berlin")),
         ("m2", entity_id("t", "u", "alice")), ("m2", entity_id("t", "u", "berlin")),
         ("m2", entity_id("t", "u", "park"))]
    )
