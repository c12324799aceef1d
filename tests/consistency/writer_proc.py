"""A separate process writing one user's facts through its own `MemoryOS` (the two-process tests).

    python -m tests.consistency.writer_proc SETTINGS_JSON PREFIX START_AT ROUNDS

Each round writes one dated employer fact of its own and one message whose id both processes
share; rounds start on the wall clock (`START_AT` + round * 0.5 s), so two processes overlap.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

from memsvc.config import Settings
from memsvc.schemas import MessageIn, WriteRequest
from storage.registry import build_memory_os


def employer_request(prefix: str, i: int) -> WriteRequest:
    when = datetime(2020, 1, 1 + i, 12, 0, tzinfo=UTC) if prefix == "a" else datetime(2020, 1, 1 + i, 18, 0, tzinfo=UTC)
    return WriteRequest(user_id="alice", messages=[
        MessageIn(id=f"{prefix}{i}", role="user", name="Alice", content=f"I work at {prefix.upper()}corp{i}.", timestamp=when),
        MessageIn(id=f"shared{i}", role="user", name="Alice", content=f"Round {i} of the shared thread.", timestamp=when),
    ])


def main() -> None:
    settings = Settings.model_validate(json.loads(sys.argv[1]))
    prefix, start_at, rounds = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    os_ = build_memory_os(settings, start=False)
    try:
        for i in range(rounds):
            time.sleep(max(0.0, start_at + 0.5 * i - time.time()))
            os_.add("t", employer_request(prefix, i))
    finally:
        os_.close()
    print("ok")


if __name__ == "__main__":
    main()
