"""Calls to the gate model that fall back to the heuristic twin when the model cannot answer.

A remote gate worker (`MEMSVC_GATES__KIND=remote`, `memsvc gates serve`) can restart or be out of
reach for a while. Its port then raises `BackendUnavailable`; instead of failing the write or the
search, the write path stores the heuristic gate's importance and the read path keeps the fused
order, with the query as asked (its `why` says so). Each fallback is counted per head (this node:
`GET /v1/policies` -> `gates.fallbacks`, `/metrics` -> `memsvc_gate_fallbacks_total`) and logged at
most once a minute per head. Any other error of the model (a bug, a local model fed the wrong
shape) is not a fallback: it fails the request as before.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from memsvc.errors import BackendUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class GateFallbacks:
    def __init__(self, warn_every_s: float = 60.0) -> None:
        self.warn_every_s = warn_every_s
        self._counts: Counter[str] = Counter()
        self._warned: dict[str, float] = {}
        self._lock = threading.Lock()

    def call(self, head: str, fn: Callable[[], T]) -> T | None:
        """`fn()`, or None when the gate model is unavailable (the caller runs the heuristic twin)."""
        try:
            return fn()
        except BackendUnavailable as exc:
            now = time.monotonic()
            with self._lock:
                self._counts[head] += 1
                warn = now - self._warned.get(head, -math.inf) >= self.warn_every_s
                if warn:
                    self._warned[head] = now
            if warn:
                log.warning("gate model unavailable for the %s head (%s): its heuristic twin runs instead "
                            "(logged at most once a minute)", head, exc)
            return None

    def counts(self) -> dict[str, int]:
        """Fallbacks per head on this node since it started."""
        with self._lock:
            return dict(sorted(self._counts.items()))
