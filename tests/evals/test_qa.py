"""QA mode: skipped without an endpoint; the benchmarks' prompts and scoring with a stand-in endpoint."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from evals.qa import (
    LME_JUDGE_PROMPTS,
    SKIP_MESSAGE,
    Endpoint,
    QAScorer,
    build_context,
    endpoint_from_env,
    locomo_f1,
    token_f1,
)
from evals.runner import Hit
from evals.tasks import Query


class FakeChat:
    """An OpenAI-compatible client that answers from a list and records the prompts."""

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.prompts = list(replies), []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kw: Any) -> Any:
        self.prompts.append(kw["messages"][0]["content"])
        msg = SimpleNamespace(content=self.replies.pop(0))
        return SimpleNamespace(choices=[SimpleNamespace(message=msg)],
                               usage=SimpleNamespace(prompt_tokens=100, completion_tokens=5))


def _hit(content: str, words: int | None = None, when: str | None = "2023-05-08T13:56:00+00:00") -> Hit:
    return Hit("m", "episodic", 1.0, words or len(content.split()), ("D1:1",), ("D1:1",), content, when)


def test_endpoint_from_env() -> None:
    assert endpoint_from_env({}) is None
    assert endpoint_from_env({"MEMSVC_EVAL_LLM_URL": "http://x/v1"}) is None
    assert endpoint_from_env({"MEMSVC_EVAL_LLM_URL": "http://x/v1", "MEMSVC_EVAL_LLM_MODEL": "m"}) == Endpoint(
        "http://x/v1", "m", None)
    assert "MEMSVC_EVAL_LLM_URL" in SKIP_MESSAGE and "skipped" in SKIP_MESSAGE


def test_locomo_f1() -> None:
    assert token_f1("7 May 2023", "7 May 2023") == 1.0
    assert token_f1("The painting", "paintings") == 1.0  # articles dropped, -s/-ing stripped
    assert token_f1("red car", "red bike") == 0.5
    assert token_f1("", "x") == 0.0
    assert locomo_f1("hiking, cooking", "cooking, skiing, hiking", "multi_hop") == pytest.approx(2 / 3)
    assert locomo_f1("Not mentioned in the conversation", "", "adversarial") == 1.0
    assert locomo_f1("Paris", "Paris; France", "open_domain") == 1.0


def test_build_context_respects_budget() -> None:
    hits = [_hit("a " * 600, 600), _hit("b " * 300, 300), _hit("c", 1)]
    assert len(build_context(hits, 1000)) == 3
    assert len(build_context(hits, 900)) == 2


def test_locomo_reader_and_judge_prompts() -> None:
    fake = FakeChat(["7 May 2023", '{"label": "CORRECT"}'])
    scorer = QAScorer(Endpoint("http://x", "m"), "locomo", client=fake)
    q = Query("q1", "c", "When did Caroline go to the LGBTQ support group?", "temporal_reasoning", ("D1:3",),
              answer="7 May 2023")
    out = scorer(q, [_hit("Caroline: I went to a LGBTQ support group yesterday.")])
    reader, judge = fake.prompts
    assert reader.startswith("2023-05-08: Caroline: I went to a LGBTQ support group yesterday.\n\n")
    assert "Use DATE of CONVERSATION to answer with an approximate date. Short answer:" in reader
    assert "Gold answer: 7 May 2023\nGenerated answer: 7 May 2023" in judge
    assert out["score"] == 1.0 and out["f1"] == 1.0
    assert out["tokens"] == {"reader": {"prompt": 100, "completion": 5}, "judge": {"prompt": 100, "completion": 5}}


def test_locomo_adversarial_uses_options_and_locomo_rule() -> None:
    fake = FakeChat(["Not mentioned in the conversation"])
    scorer = QAScorer(Endpoint("http://x", "m"), "locomo", client=fake)
    q = Query("q5", "c", "What did Caroline realize after her charity race?", "adversarial", ("D2:3",),
              meta={"adversarial_answer": "self-care is important"})
    out = scorer(q, [_hit("Melanie: I ran a charity race.")])
    assert "Select the correct answer: (a)" in fake.prompts[0] and "self-care is important" in fake.prompts[0]
    assert len(fake.prompts) == 1 and out["score"] == 1.0


def test_longmemeval_prompts_per_type() -> None:
    fake = FakeChat(["You graduated in Business Administration.", "yes"])
    scorer = QAScorer(Endpoint("http://x", "m"), "longmemeval", client=fake)
    q = Query("e47becba", "e47becba", "What degree did I graduate with?", "single-session-user", ("s:4",),
              answer="Business Administration", meta={"question_date": "2023/05/30 (Tue) 23:40", "abstention": False})
    out = scorer(q, [_hit("I graduated with a degree in Business Administration", when="2023-05-20")])
    reader, judge = fake.prompts
    assert "History Chats:\n\n\n### Session 1:\nSession Date: 2023-05-20\nSession Content:\n" in reader
    assert "Current Date: 2023/05/30 (Tue) 23:40\nQuestion: What degree did I graduate with?" in reader
    assert judge == LME_JUDGE_PROMPTS["default"].format(q.text, "Business Administration", out["answer"])
    assert out["score"] == 1.0
    fake = FakeChat(["I don't know", "no"])
    abstain = Query("x_abs", "x", "Q?", "knowledge-update", (), answer="not said", meta={"abstention": True})
    QAScorer(Endpoint("http://x", "m"), "longmemeval", client=fake)(abstain, [])
    assert fake.prompts[1].startswith("I will give you an unanswerable question")
