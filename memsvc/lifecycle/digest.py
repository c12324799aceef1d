"""The episode digest: one coarse memory per episode (HCAM's first level), citing exactly the turns
whose words it states.

Offline (`extractive`): the episode's most central sentences, each with its speaker, in the order
they were said; centrality is how many of the episode's recurring content words a sentence holds.
With an LLM (`abstractive`): a short summary written by the model, which must name the turns it
states (ids outside the episode are dropped, an answer naming none falls back to the extractive
digest). Both are `DigestFn`s for the `episode-digest` card's executor.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from memsvc.learn.features import content_stems
from memsvc.ports import LLM
from memsvc.skills.types import Span
from memsvc.write.extract import sentences

MAX_SENTENCES = 3
MAX_WORDS = 60


def extractive(spans: Sequence[Span]) -> tuple[str, list[str]]:
    """(digest, the message ids of the turns it quotes); empty when no sentence has content words."""
    stems = [[(sent, content_stems(sent)) for sent in sentences(s.text)] for s in spans]
    df = Counter(w for turn in stems for _, words in turn for w in words)
    scored: list[tuple[float, int, int, str]] = []
    for i, turn in enumerate(stems):
        for j, (sent, stemmed) in enumerate(turn):
            if len(stemmed) < 2:
                continue
            # Recurring words carry the episode's topic; a word said once is only the sentence's.
            score = sum(df[w] - 1 for w in stemmed) / (len(stemmed) ** 0.5)
            scored.append((score, i, j, sent))
    scored.sort(key=lambda x: (-x[0], x[1], x[2]))
    picked: list[tuple[int, int, str]] = []
    words = 0
    for _, i, j, sent in scored:
        n = len(sent.split())
        if picked and words + n > MAX_WORDS:
            continue
        picked.append((i, j, sent))
        words += n
        if len(picked) == MAX_SENTENCES:
            break
    picked.sort()
    lines = [f"{spans[i].speaker}: {sent.strip()}" for i, _, sent in picked]
    sources = list(dict.fromkeys(spans[i].message_id for i, _, _ in picked))
    return " ".join(lines), sources


_PROMPT = (
    "Summarise this episode of a conversation in at most {words} words, in the third person, naming the "
    "speakers. Answer with JSON: {{\"summary\": \"...\", \"turns\": [ids of the turns the summary states]}}."
)


class Abstractive:
    """The digest written by an LLM (the existing port), falling back to `extractive` on a bad answer."""

    def __init__(self, llm: LLM, max_tokens: int = 256) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    def __call__(self, spans: Sequence[Span]) -> tuple[str, list[str]]:
        turns = "\n".join(f"[{s.message_id}] {s.speaker}: {s.text}" for s in spans)
        reply = self.llm.complete([
            {"role": "system", "content": _PROMPT.format(words=MAX_WORDS)},
            {"role": "user", "content": turns},
        ], max_tokens=self.max_tokens, json_mode=True)
        try:
            body = json.loads(reply.text)
            summary = str(body["summary"]).strip()
            ids = {s.message_id for s in spans}
            sources = [str(i) for i in body.get("turns", []) if str(i) in ids]
        except (ValueError, KeyError, TypeError, AttributeError):
            return extractive(spans)
        if not summary or not sources:
            return extractive(spans)
        return summary, list(dict.fromkeys(sources))
