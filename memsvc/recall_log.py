"""Recall logs and access counts, written in batches off the request path.

Every search logs what it returned (a training signal, ARCHITECTURE §2 read step 5) and counts an
access on each memory it returned. Writing both inside the request took the record store's write
lock twice per search, so recall queued behind writes (SQLite has one writer). Here a search only
appends to a buffer; a background thread writes the buffer every `interval_s` in one transaction:
the events, and one access update per distinct count. A crash can lose the last `interval_s` of
recall logs and access counts (never a memory or a write), and so can a record store that fails a
flush: recall goes on serving. Before the thread starts, and after it
stops, `add` writes at once.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from memsvc.models import EventLog
from memsvc.ports import RecordStore

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    events: list[EventLog] = field(default_factory=list)
    access: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # tenant -> id -> n
    last: dict[str, datetime] = field(default_factory=dict)  # tenant -> newest access time


class RecallLog:
    def __init__(self, records: RecordStore, interval_s: float = 0.5, max_pending: int = 5_000) -> None:
        self.records = records
        self.interval_s = interval_s
        self.max_pending = max_pending
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer of batches at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, event: EventLog, returned: list[str], at: datetime) -> None:
        with self._lock:
            p = self._pending
            p.events.append(event)
            p.access[event.tenant].update(returned)
            p.last[event.tenant] = max(at, p.last.get(event.tenant, at))
            full = len(p.events) >= self.max_pending
        if self._thread is None or full:
            self._flush_quietly()

    def forget(self, tenant: str, user_id: str) -> None:
        """Drop the scope's pending events (its purge deletes what was written already)."""
        with self._lock:
            p = self._pending
            p.events = [e for e in p.events if not (e.tenant == tenant and e.user_id == user_id)]

    def flush(self) -> int:
        """Write what is pending; returns how many recall events were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, _Pending()
            if not batch.events:
                return 0
            for tenant, counts in batch.access.items():
                by_count: dict[int, list[str]] = defaultdict(list)
                for memory_id, n in counts.items():
                    by_count[n].append(memory_id)
                for n, ids in sorted(by_count.items()):
                    self.records.record_access(tenant, ids, batch.last[tenant], times=n)
            with self.records.unit_of_work() as uow:
                uow.log(batch.events)
            return len(batch.events)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memsvc-recall-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the batch is lost; recall itself keeps working
            log.warning("could not write recall logs: %s", exc)
