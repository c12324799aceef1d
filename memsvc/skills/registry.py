"""The executors a write pipeline gets: every built-in handler, plus the LLM executor when an
LLM is configured (an `llm` card without one is reported inactive, never silently skipped)."""

from __future__ import annotations

from memsvc.config import SkillsConfig
from memsvc.ports import LLM, SkillExecutor
from memsvc.skills.llm import LLMExecutor
from memsvc.skills.offline import (
    AgentExecutor,
    ProceduresExecutor,
    TermsExecutor,
    ToolResultsExecutor,
    VerbatimExecutor,
)
from memsvc.skills.statements import EventsExecutor, PlansExecutor, RelationsExecutor, StatementsExecutor


def default_executors(llm: LLM | None, config: SkillsConfig) -> list[SkillExecutor]:
    executors: list[SkillExecutor] = [
        VerbatimExecutor(), StatementsExecutor(), EventsExecutor(), PlansExecutor(), RelationsExecutor(),
        ProceduresExecutor(), ToolResultsExecutor(), TermsExecutor(), AgentExecutor(),
    ]
    if llm is not None:
        executors.append(LLMExecutor(llm, context=config.llm_context, retries=config.llm_retries,
                                     max_tokens=config.llm_max_tokens))
    return executors
