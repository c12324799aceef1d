"""The shared text helpers and the heuristic gate on sentences with known output
(the skills themselves: tests/skills; segmentation: tests/lifecycle)."""

from memsvc.graph.service import speaker_of
from memsvc.models import SPEAKER_KEY, MemoryCube, MemoryType, Role
from memsvc.write.extract import to_third_person
from memsvc.write.pipeline import episodic_content
from memsvc.write.stages import heuristic_gate


def test_verb_inflection_after_i() -> None:
    assert to_third_person("I go to the gym and I study law", "Ann") == "Ann goes to the gym and Ann studies law"
    assert to_third_person("I'm tired and I've eaten", "Ann") == "Ann is tired and Ann has eaten"
    assert to_third_person("I can swim", "Ann") == "Ann can swim"
    assert to_third_person("I went home and I got a dog", "Ann") == "Ann went home and Ann got a dog"


def test_gate_scores() -> None:
    assert heuristic_gate(Role.USER, "ok").importance == 0.1
    assert not heuristic_gate(Role.USER, "thanks!").extract
    decision = heuristic_gate(Role.USER, "I moved to Berlin in May 2023")
    assert (decision.importance, decision.extract) == (0.6, True)
    # every role but the system prompt reaches the controller; the cards say which roles they read
    assert heuristic_gate(Role.ASSISTANT, "1. open the app\n2. tap Settings").extract
    assert heuristic_gate(Role.TOOL, '{"status": "ok", "rows": 3}').extract
    assert not heuristic_gate(Role.SYSTEM, "You are a helpful assistant.").extract


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
