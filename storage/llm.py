"""An OpenAI-compatible chat model behind the `LLM` port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memsvc.config import OpenAILLM
from memsvc.ports import Completion


class OpenAIChat:
    def __init__(self, config: OpenAILLM) -> None:
        from openai import OpenAI

        self._client = OpenAI(base_url=config.base_url, api_key=config.api_key or "unused", timeout=config.timeout_s)
        self.model = config.model

    def complete(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 512,
        temperature: float = 0.0, json_mode: bool = False,
    ) -> Completion:
        kwargs: dict[str, Any] = {}
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        resp = self._client.chat.completions.create(
            model=self.model, messages=list(messages), max_tokens=max_tokens,  # type: ignore[arg-type]
            temperature=temperature, **kwargs,
        )
        usage = resp.usage
        return Completion(
            text=resp.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
