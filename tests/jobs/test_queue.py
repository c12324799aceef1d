"""The `JobQueue` contract, on the in-process queue and on Redis streams."""

from __future__ import annotations

import time
from collections.abc import Callable

from memsvc.ports import JobQueue


def test_fifo_delivery_and_ack(make_queue: Callable[[float], JobQueue]) -> None:
    q = make_queue(30.0)
    q.push(["a", "b", "c"])
    assert q.depth() == 3
    got = [q.pull("w1", 1.0) for _ in range(3)]
    assert [d.job_id for d in got if d] == ["a", "b", "c"]
    assert q.pull("w1", 0.05) is None
    assert q.depth() == 3  # delivered but not acknowledged: still in flight
    for d in got:
        assert d is not None
        q.ack(d)
    assert q.depth() == 0


def test_unacknowledged_delivery_goes_out_again_after_the_lease(make_queue: Callable[[float], JobQueue]) -> None:
    first, second = make_queue(0.3), make_queue(0.3)
    first.push(["job-1"])
    d1 = first.pull("crashed", 1.0)
    assert d1 is not None and d1.job_id == "job-1"
    assert second.pull("alive", 0.05) is None  # the lease still holds
    time.sleep(0.4)
    d2 = second.pull("alive", 1.0)
    assert d2 is not None and d2.job_id == "job-1"
    second.ack(d2)
    assert second.depth() == 0


def test_touch_restarts_the_lease(make_queue: Callable[[float], JobQueue]) -> None:
    first, second = make_queue(0.4), make_queue(0.4)
    first.push(["job-1"])
    d1 = first.pull("busy", 1.0)
    assert d1 is not None
    for _ in range(3):  # 0.75 s in all, longer than the lease, renewed every 0.25 s
        time.sleep(0.25)
        first.touch(d1)
    assert second.pull("other", 0.05) is None
    first.ack(d1)
    time.sleep(0.5)
    assert second.pull("other", 0.05) is None


def test_pull_waits_for_a_push(make_queue: Callable[[float], JobQueue]) -> None:
    import threading

    q = make_queue(30.0)
    threading.Timer(0.2, lambda: q.push(["late"])).start()
    started = time.monotonic()
    d = q.pull("w", 3.0)
    assert d is not None and d.job_id == "late"
    assert time.monotonic() - started < 2.0
    q.ack(d)
