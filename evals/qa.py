"""QA mode: an LLM reader answers from the recalled context, an LLM judge scores the answer.

Needs an OpenAI-compatible endpoint: `MEMSVC_EVAL_LLM_URL`, `MEMSVC_EVAL_LLM_MODEL`, and
`MEMSVC_EVAL_LLM_KEY` (optional for local servers). Without one the mode is skipped with a message;
nothing is ever faked.

Prompts, as the benchmarks define them:
- LoCoMo / REALTALK reader: LoCoMo's RAG prompt (`task_eval/gpt_utils.py`: `QA_PROMPT`, the temporal
  suffix for category 2, the two-option prompt for adversarial category 5), context lines
  `<date>: <memory>`. Scores: LoCoMo's token F1 (`task_eval/evaluation.py`; Porter stemming replaced
  by the suffix stripping of `evals.metrics`, since nltk is not a dependency) and the LLM judge
  (`ACCURACY_PROMPT`) that Mem0's LoCoMo evaluation introduced and later work reuses — LoCoMo itself
  defines no judge. Category 5 is scored by LoCoMo's rule ("not mentioned" / "no information available").
- LongMemEval reader: `src/generation/run_generation.py` (chain-of-thought history-chats template);
  judge: `src/evaluation/evaluate_qa.py` `get_anscheck_prompt` per question type and for abstention.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evals.metrics import results_within_budget, stem
from evals.runner import Hit
from evals.tasks import Query

ENV_URL, ENV_KEY, ENV_MODEL = "MEMSVC_EVAL_LLM_URL", "MEMSVC_EVAL_LLM_KEY", "MEMSVC_EVAL_LLM_MODEL"
QA_BENCHMARKS = {"locomo": "locomo", "realtalk": "locomo", "longmemeval": "longmemeval"}
SKIP_MESSAGE = (
    f"QA mode skipped: no LLM endpoint configured (set {ENV_URL} and {ENV_MODEL}, and {ENV_KEY} if the "
    "endpoint needs one). Retrieval metrics are unaffected."
)

LOCOMO_QA_PROMPT = """
Based on the above context, write an answer in the form of a short phrase for the following question. Answer with exact words from the context whenever possible.

Question: {} Short answer:
"""
LOCOMO_QA_PROMPT_CAT_5 = """
Based on the above context, answer the following question.

Question: {} Short answer:
"""
LOCOMO_TEMPORAL_SUFFIX = " Use DATE of CONVERSATION to answer with an approximate date."
LOCOMO_JUDGE_PROMPT = """
Your task is to label an answer to a question as ’CORRECT’ or ’WRONG’. You will be given the following data:
    (1) a question (posed by one user to another user), 
    (2) a ’gold’ (ground truth) answer, 
    (3) a generated answer
which you will score as CORRECT/WRONG.

The point of the question is to ask about something one user should know about the other user based on their prior conversations.
The gold answer will usually be a concise and short answer that includes the referenced topic, for example:
Question: Do you remember what I got the last time I went to Hawaii?
Gold answer: A shell necklace
The generated answer might be much longer, but you should be generous with your grading - as long as it touches on the same topic as the gold answer, it should be counted as CORRECT. 

For time related questions, the gold answer will be a specific date, month, year, etc. The generated answer might be much longer or use relative time references (like "last Tuesday" or "next month"), but you should be generous with your grading - as long as it refers to the same date or time period as the gold answer, it should be counted as CORRECT. Even if the format differs (e.g., "May 7th" vs "7 May"), consider it CORRECT if it's the same date.

Now it's time for the real question:
Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

First, provide a short (one sentence) explanation of your reasoning, then finish with CORRECT or WRONG. 
Do NOT include both CORRECT and WRONG in your response, or it will break the evaluation script.

Just return the label CORRECT or WRONG in a json format with the key as "label".
"""

LME_READER_PROMPT = (
    "I will give you several history chats between you and a user. Please answer the question based on the "
    "relevant chat history. Answer the question step by step: first extract all the relevant information, and "
    "then reason over the information to get the answer.\n\n\nHistory Chats:\n\n{}\n\nCurrent Date: {}\n"
    "Question: {}\nAnswer (step by step):"
)
_LME_INTRO = "I will give you a question, a correct answer, and a response from a model. Please answer yes if the response contains the correct answer. Otherwise, answer no. "
_LME_STEPS = "If the response is equivalent to the correct answer or contains all the intermediate steps to get the correct answer, you should also answer yes. If the response only contains a subset of the information required by the answer, answer no. "
_LME_TAIL = "\n\nQuestion: {}\n\nCorrect Answer: {}\n\nModel Response: {}\n\nIs the model response correct? Answer yes or no only."
LME_JUDGE_PROMPTS = {
    "default": _LME_INTRO + _LME_STEPS + _LME_TAIL,
    "temporal-reasoning": _LME_INTRO + _LME_STEPS + "In addition, do not penalize off-by-one errors for the number of days. If the question asks for the number of days/weeks/months, etc., and the model makes off-by-one errors (e.g., predicting 19 days when the answer is 18), the model's response is still correct. " + _LME_TAIL,
    "knowledge-update": _LME_INTRO + "If the response contains some previous information along with an updated answer, the response should be considered as correct as long as the updated answer is the required answer." + _LME_TAIL,
    "single-session-preference": "I will give you a question, a rubric for desired personalized response, and a response from a model. Please answer yes if the response satisfies the desired response. Otherwise, answer no. The model does not need to reflect all the points in the rubric. The response is correct as long as it recalls and utilizes the user's personal information correctly.\n\nQuestion: {}\n\nRubric: {}\n\nModel Response: {}\n\nIs the model response correct? Answer yes or no only.",
    "abstention": "I will give you an unanswerable question, an explanation, and a response from a model. Please answer yes if the model correctly identifies the question as unanswerable. The model could say that the information is incomplete, or some other information is given but the asked information is not.\n\nQuestion: {}\n\nExplanation: {}\n\nModel Response: {}\n\nDoes the model correctly identify the question as unanswerable? Answer yes or no only.",
}


@dataclass(frozen=True)
class Endpoint:
    url: str
    model: str
    key: str | None = None


def endpoint_from_env(env: Mapping[str, str] | None = None) -> Endpoint | None:
    env = os.environ if env is None else env
    url, model = env.get(ENV_URL), env.get(ENV_MODEL)
    return Endpoint(url, model, env.get(ENV_KEY)) if url and model else None


# --- LoCoMo's answer scoring ---------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    text = text.replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, truth: str) -> float:
    pred = [stem(w) for w in normalize_answer(prediction).split()]
    gold = [stem(w) for w in normalize_answer(truth).split()]
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def locomo_f1(prediction: str, answer: str, category: str) -> float:
    """LoCoMo's per-category F1: multi-hop splits answers on commas; adversarial checks for a refusal."""
    if category == "adversarial":
        low = prediction.lower()
        return 1.0 if "no information available" in low or "not mentioned" in low else 0.0
    if category in ("open_domain", "commonsense"):
        answer = answer.split(";")[0].strip()
    if category == "multi_hop":
        preds = [p.strip() for p in prediction.split(",")]
        golds = [g.strip() for g in answer.split(",")]
        return sum(max(token_f1(p, g) for p in preds) for g in golds) / len(golds)
    return token_f1(prediction, answer)


def build_context(hits: list[Hit], budget_words: int) -> list[Hit]:
    """The results a reader sees: the leading ranked results within the word budget."""
    return hits[: results_within_budget([h.words for h in hits], budget_words)]


class QAScorer:
    """Reader + judge for one benchmark; call it per query with the ranked hits (a runner QA hook)."""

    def __init__(self, endpoint: Endpoint, benchmark: str, budget_words: int = 1000, client: Any = None) -> None:
        self.endpoint = endpoint
        self.kind = QA_BENCHMARKS[benchmark]
        self.budget = budget_words
        if client is None:
            from openai import OpenAI

            client = OpenAI(base_url=endpoint.url, api_key=endpoint.key or "EMPTY", timeout=120.0, max_retries=3)
        self._client = client

    def _chat(self, prompt: str, max_tokens: int) -> tuple[str, dict[str, int]]:
        resp = self._client.chat.completions.create(
            model=self.endpoint.model, messages=[{"role": "user", "content": prompt}],
            temperature=0, max_tokens=max_tokens, n=1,
        )
        usage = getattr(resp, "usage", None)
        tokens = {"prompt": getattr(usage, "prompt_tokens", 0) or 0,
                  "completion": getattr(usage, "completion_tokens", 0) or 0}
        return (resp.choices[0].message.content or "").strip(), tokens

    def __call__(self, query: Query, hits: list[Hit]) -> dict[str, Any]:
        context = build_context(hits, self.budget)
        if self.kind == "locomo":
            return self._locomo(query, context)
        return self._longmemeval(query, context)

    def _locomo(self, query: Query, context: list[Hit]) -> dict[str, Any]:
        lines = "\n".join(f"{(h.event_time or '')[:10]}: {h.content}" for h in context)
        if query.category == "adversarial":
            wrong = str(query.meta.get("adversarial_answer") or "")
            first = int(hashlib.sha1(query.id.encode()).hexdigest(), 16) % 2 == 0
            options = ("Not mentioned in the conversation", wrong) if first else (wrong, "Not mentioned in the conversation")
            question = query.text + " Select the correct answer: (a) {} (b) {}. ".format(*options)
            prompt = lines + "\n\n" + LOCOMO_QA_PROMPT_CAT_5.format(question)
        else:
            suffix = LOCOMO_TEMPORAL_SUFFIX if query.category == "temporal_reasoning" else ""
            prompt = lines + "\n\n" + LOCOMO_QA_PROMPT.format(query.text + suffix)
        answer, reader_tokens = self._chat(prompt, 32)
        if query.category == "adversarial":
            low = answer.lower()
            if low in ("a", "(a)", "b", "(b)"):
                answer = options[0] if "a" in low else options[1]
            return {"answer": answer, "f1": locomo_f1(answer, "", query.category),
                    "score": locomo_f1(answer, "", query.category),
                    "tokens": {"reader": reader_tokens}, "context_results": len(context)}
        gold = query.answer or ""
        verdict, judge_tokens = self._chat(
            LOCOMO_JUDGE_PROMPT.format(question=query.text, gold_answer=gold, generated_answer=answer), 200
        )
        label = 1.0 if "CORRECT" in verdict.upper() and "WRONG" not in verdict.upper() else 0.0
        return {"answer": answer, "f1": locomo_f1(answer, gold, query.category), "score": label,
                "judge": verdict[:300], "tokens": {"reader": reader_tokens, "judge": judge_tokens},
                "context_results": len(context)}

    def _longmemeval(self, query: Query, context: list[Hit]) -> dict[str, Any]:
        chunks = sorted(context, key=lambda h: h.event_time or "")
        history = "".join(
            f"\n### Session {i}:\nSession Date: {h.event_time or ''}\nSession Content:\n{h.content}\n"
            for i, h in enumerate(chunks, start=1)
        )
        prompt = LME_READER_PROMPT.format(history, query.meta.get("question_date") or "", query.text)
        answer, reader_tokens = self._chat(prompt, 800)
        kind = "abstention" if query.meta.get("abstention") else query.category
        template = LME_JUDGE_PROMPTS.get(kind, LME_JUDGE_PROMPTS["default"])
        verdict, judge_tokens = self._chat(template.format(query.text, query.answer or "", answer), 10)
        return {"answer": answer, "score": 1.0 if "yes" in verdict.lower() else 0.0, "judge": verdict,
                "tokens": {"reader": reader_tokens, "judge": judge_tokens}, "context_results": len(context)}
