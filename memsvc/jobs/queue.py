"""The in-process `JobQueue`: a FIFO with leases, for one process's own worker threads."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence

from memsvc.ports import Delivery


class InProcessQueue:
    """Job ids delivered to this process's threads; an unacknowledged delivery goes out again once its
    lease runs out. Nothing outlives the process: the record store's sweep pushes pending jobs again
    after a restart (`durable` is False)."""

    durable = False

    def __init__(self, lease_s: float = 20.0) -> None:
        self.lease_s = lease_s
        self._waiting: deque[str] = deque()
        self._in_flight: dict[str, tuple[str, float]] = {}  # token -> (job id, lease deadline)
        self._tokens = itertools.count(1)
        self._cond = threading.Condition()
        self._closed = False

    def push(self, job_ids: Sequence[str]) -> None:
        with self._cond:
            self._waiting.extend(job_ids)
            self._cond.notify(len(job_ids))

    def pull(self, consumer: str, timeout_s: float) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                self._expire(now)
                if self._waiting:
                    job_id = self._waiting.popleft()
                    token = str(next(self._tokens))
                    self._in_flight[token] = (job_id, now + self.lease_s)
                    return Delivery(job_id, token)
                if now >= deadline:
                    return None
                self._cond.wait(min(deadline - now, self.lease_s))
        return None

    def _expire(self, now: float) -> None:
        expired = [tok for tok, (_, until) in self._in_flight.items() if until <= now]
        for tok in expired:
            job_id, _ = self._in_flight.pop(tok)
            self._waiting.appendleft(job_id)

    def ack(self, delivery: Delivery) -> None:
        with self._cond:
            self._in_flight.pop(delivery.token, None)

    def touch(self, delivery: Delivery) -> None:
        with self._cond:
            if delivery.token in self._in_flight:
                self._in_flight[delivery.token] = (delivery.job_id, time.monotonic() + self.lease_s)

    def depth(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._in_flight)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
