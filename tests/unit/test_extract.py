"""The offline extractor, gate and segmenter on sentences with known output."""

from datetime import UTC, datetime, timedelta

from memsvc.graph.service import speaker_of
from memsvc.models import SPEAKER_KEY, MemoryCube, MemoryType, Role
from memsvc.write.extract import extract_facts, extract_procedure, slot_of, to_third_person
from memsvc.write.pipeline import episodic_content
from memsvc.write.stages import heuristic_gate, segment


def test_first_person_fact_becomes_a_third_person_semantic_memory() -> None:
    facts = extract_facts("I moved to Berlin in May 2023.", "Alice")
    assert [(f.type, f.content, f.slot) for f in facts] == [
        (MemoryType.SEMANTIC, "Alice moved to Berlin in May 2023.", "residence")
    ]


def test_preferences_become_refined_memories_with_slots() -> None:
    facts = extract_facts("My favorite color is blue. I love hiking!", "Bob")
    assert [(f.type, f.content, f.slot) for f in facts] == [
        (MemoryType.REFINED, "Bob's favorite color is blue.", "favorite color"),
        (MemoryType.REFINED, "Bob loves hiking!", None),
    ]


def test_questions_greetings_and_third_person_sentences_yield_nothing() -> None:
    assert extract_facts("Do you live in Berlin?", "Alice") == []
    assert extract_facts("Hey Mel! Good to see you!", "Alice") == []
    assert extract_facts("Melanie moved to Paris.", "Alice") == []


def test_named_pet_fact_sets_a_name_slot() -> None:
    assert slot_of("My cat is called Miso") == "name:cat"
    assert extract_facts("My cat is called Miso", "Alice")[0].content == "Alice's cat is called Miso."


def test_verb_inflection_after_i() -> None:
    assert to_third_person("I go to the gym and I study law", "Ann") == "Ann goes to the gym and Ann studies law"
    assert to_third_person("I'm tired and I've eaten", "Ann") == "Ann is tired and Ann has eaten"
    assert to_third_person("I can swim", "Ann") == "Ann can swim"


def test_procedures_are_detected_by_ordered_steps() -> None:
    assert extract_procedure("1. unplug the router\n2. wait ten seconds\n3. plug it in")
    assert extract_procedure("First preheat the oven, then add the dough.")
    assert not extract_procedure("I baked bread yesterday.")


def test_gate_scores() -> None:
    assert heuristic_gate(Role.USER, "ok").importance == 0.1
    assert not heuristic_gate(Role.USER, "thanks!").extract
    decision = heuristic_gate(Role.USER, "I moved to Berlin in May 2023")
    assert (decision.importance, decision.extract) == (0.6, True)
    assert not heuristic_gate(Role.ASSISTANT, "I moved to Berlin").extract


def test_segment_splits_on_session_change_and_time_gap() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = [t0, t0 + timedelta(minutes=5), t0 + timedelta(hours=2), t0 + timedelta(hours=2, minutes=1)]
    assert segment(times, ["s1", "s1", "s1", "s2"]) == [0, 0, 1, 2]
    assert segment([None, None], [None, None]) == [0, 0]


def test_episodic_content_prefixes_names_and_other_roles_but_not_the_users_own_words() -> None:
    assert episodic_content(Role.USER, "Alice", "I moved.") == "Alice: I moved."
    assert episodic_content(Role.USER, None, "I moved.") == "I moved."
    assert episodic_content(Role.ASSISTANT, None, "Noted.") == "assistant: Noted."
    assert episodic_content(Role.TOOL, "search", "3 hits") == "search: 3 hits"


def test_speaker_comes_from_metadata_and_falls_back_to_the_content_prefix() -> None:
    def cube(content: str, **metadata: str) -> MemoryCube:
        return MemoryCube(tenant="t", user_id="u", type=MemoryType.EPISODIC, content=content, metadata=metadata)

    assert speaker_of(cube("Title: not a speaker", **{SPEAKER_KEY: "user"})) == "user"
    assert speaker_of(cube("Alice: I moved.")) == "Alice"  # written before the metadata key existed
    assert speaker_of(cube("I moved.")) is None
    fact = MemoryCube(tenant="t", user_id="u", type=MemoryType.SEMANTIC, content="Alice: fact")
    assert speaker_of(fact) is None
