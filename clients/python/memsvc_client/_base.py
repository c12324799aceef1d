"""What the sync and async clients share besides the calls: configuration and headers."""

from __future__ import annotations

import os
from typing import Any

import httpx

from memsvc_client._calls import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0


class _ClientConfig:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float | httpx.Timeout | None,
                 retry: RetryPolicy | None, headers: dict[str, str] | None) -> None:
        # The environment is read only when the caller passes nothing (like openai's client).
        self.base_url = (base_url or os.environ.get("MEMSVC_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("MEMSVC_API_KEY")
        self.timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        self.retry = retry or RetryPolicy()
        self.headers = {"User-Agent": "memsvc-client/0.1", **(headers or {})}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"

    def client_kwargs(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self.headers, "timeout": self.timeout}
