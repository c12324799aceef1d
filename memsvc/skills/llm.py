"""The LLM executor: a card's How to apply and Constraints become the prompt, the reply is JSON
operations against the memories already stored near the span (Mem0-style ADD / UPDATE / DELETE /
NOOP), with provenance kept: every operation cites the span's message.

Existing memories are shown under short numbers, not their ids, so the model cannot invent an id;
a reply naming an unknown number, an unknown type or no content is malformed. A malformed or empty
reply is sent back once per `retries` with what was wrong; if it is still unusable, or the call
itself fails, the span gets an explicit NOOP with the reason (never a silent no-op, never a 500).
Tokens are counted on every call, retries included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from memsvc.models import MemoryCube, MemoryType
from memsvc.ports import LLM, Completion
from memsvc.skills.cards import SkillCard
from memsvc.skills.types import Operation, OpKind, SkillContext, SkillResult, Span, noop

_OPS = {"ADD": OpKind.INSERT, "INSERT": OpKind.INSERT, "UPDATE": OpKind.UPDATE, "DELETE": OpKind.DELETE,
        "NOOP": OpKind.NOOP, "NONE": OpKind.NOOP}
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.I)

REPLY_FORMAT = (
    'Answer with one JSON object and nothing else: {"operations": [{"op": "ADD" | "UPDATE" | "DELETE" | "NOOP", '
    '"id": <number of an existing memory, for UPDATE and DELETE>, "type": <memory type, for ADD>, '
    '"content": <the memory as one self-contained sentence naming the person, for ADD and UPDATE>, '
    '"reason": <why, briefly>}]}. ADD a new memory; UPDATE an existing one the message corrects or '
    "completes (keep what stays true); DELETE one the message contradicts; NOOP when nothing is worth "
    "keeping. Use only the numbers of the memories listed."
)


def render_prompt(card: SkillCard, span: Span, existing: Sequence[MemoryCube], previous: Span | None = None) -> list[dict[str, str]]:
    """The chat messages for one span: the card's instructions, the stored memories, the message."""
    system = (
        f"You maintain the long-term memory of a user of an AI assistant, applying the skill '{card.id}'.\n\n"
        f"Purpose:\n{card.sections.get('Purpose', '')}\n\nHow to apply:\n{card.sections.get('How to apply', '')}\n\n"
        f"Constraints:\n{card.sections.get('Constraints', '')}\n\nMemory types you may write: "
        f"{', '.join(card.target_types)}.\n\n{REPLY_FORMAT}"
    )
    lines = [f"[{i}] ({c.type.value}) {c.content}" for i, c in enumerate(existing)] or ["(none)"]
    context = f"Message before it ({previous.speaker}): {previous.text}\n\n" if previous is not None else ""
    user = ("Existing memories:\n" + "\n".join(lines) + f"\n\n{context}New message from {span.speaker} "
            f"({span.timestamp.date().isoformat()}):\n{span.text}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_operations(text: str, card: SkillCard, span: Span, existing: Sequence[MemoryCube]) -> tuple[list[Operation], str | None]:
    """The reply's operations, or the reason it is malformed (for the repair prompt)."""
    body = _FENCE.sub("", text.strip())
    if not body:
        return [], "the reply was empty"
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return [], "the reply holds no JSON object"
    try:
        data = json.loads(body[start: end + 1])
    except json.JSONDecodeError as exc:
        return [], f"the JSON does not parse ({exc.msg} at character {exc.pos})"
    raw = data.get("operations") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return [], 'the object has no "operations" list'
    ops: list[Operation] = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            return [], f"operation {n} is not an object"
        kind = _OPS.get(str(item.get("op", "")).upper())
        if kind is None:
            return [], f"operation {n} has op {item.get('op')!r}; use ADD, UPDATE, DELETE or NOOP"
        reason = str(item.get("reason") or "").strip()
        if kind is OpKind.NOOP:
            ops.append(noop(card.id, (span.message_id,), f"the LLM chose NOOP: {reason or 'no reason given'}"))
            continue
        content = str(item.get("content") or "").strip()
        target: MemoryCube | None = None
        if kind in (OpKind.UPDATE, OpKind.DELETE):
            ref = item.get("id")
            index = int(ref) if isinstance(ref, int | str) and str(ref).strip().isdigit() else -1
            if not 0 <= index < len(existing):
                return [], f"operation {n} names memory {ref!r}, which is not listed"
            target = existing[index]
        if kind in (OpKind.INSERT, OpKind.UPDATE) and not content:
            return [], f"operation {n} ({kind.value}) has no content"
        mtype: MemoryType | None = None
        if kind is OpKind.INSERT:
            name = str(item.get("type") or card.target_types[0]).lower()
            if name not in card.target_types:
                return [], f"operation {n} has type {name!r}; allowed: {', '.join(card.target_types)}"
            mtype = MemoryType(name)
        ops.append(Operation(kind, card.id, (span.message_id,), mtype, content,
                             target_id=target.id if target is not None else None, reason=reason or "LLM"))
    return ops, None


class LLMExecutor:
    key = "llm"

    def __init__(self, llm: LLM, *, context: int = 5, retries: int = 1, max_tokens: int = 512) -> None:
        self.llm = llm
        self.context = context
        self.retries = retries
        self.max_tokens = max_tokens

    def apply(self, card: SkillCard, spans: Sequence[Span], context: SkillContext) -> SkillResult:
        result = SkillResult([])
        for span in spans:
            existing = context.existing(span, self.context) if context.existing is not None and self.context else []
            messages = render_prompt(card, span, existing, context.previous(span))
            ops, error = self._ask(messages, card, span, existing, result)
            if error is not None:
                result.operations.append(noop(card.id, (span.message_id,), f"LLM reply unusable: {error}"))
            elif not ops:
                result.operations.append(noop(card.id, (span.message_id,), "the LLM returned no operation"))
            else:
                result.operations += ops
        return result

    def _ask(self, messages: list[dict[str, str]], card: SkillCard, span: Span, existing: Sequence[MemoryCube],
             result: SkillResult) -> tuple[list[Operation], str | None]:
        error: str | None = None
        for attempt in range(self.retries + 1):
            try:
                reply: Completion = self.llm.complete(messages, max_tokens=self.max_tokens, json_mode=True)
            except Exception as exc:  # a failing endpoint must not fail the write: the span gets a NOOP
                return [], f"the LLM call failed ({type(exc).__name__}: {str(exc)[:200]})"
            result.calls += 1
            result.prompt_tokens += reply.prompt_tokens
            result.completion_tokens += reply.completion_tokens
            ops, error = parse_operations(reply.text, card, span, existing)
            if error is None:
                return ops, None
            if attempt < self.retries:
                messages = [*messages, {"role": "assistant", "content": reply.text[:4000]},
                            {"role": "user", "content": f"That reply cannot be used: {error}. {REPLY_FORMAT}"}]
        return [], f"{error} (after {self.retries + 1} attempts)"

