"""`RedisStreamsQueue`: the `JobQueue` port on a Redis stream with one consumer group.

Why streams and not a task library (RQ, Celery, arq): the record store already keeps each job's
state, result and lease, and decides who runs it; the queue only has to deliver ids at least once
and hand a crashed consumer's deliveries to another. A consumer group does exactly that: `XREADGROUP`
delivers, `XACK` acknowledges, and `XAUTOCLAIM` moves a delivery whose consumer went quiet for longer
than the lease to the consumer asking. A library would add a second job state, its own worker
processes and its own serialisation.

Acknowledged entries are deleted (`XDEL`), so the stream's length is the queue depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from memsvc.ports import Delivery


class RedisStreamsQueue:
    durable = True  # ids outlive the process (as long as the Redis server keeps them)

    def __init__(self, url: str, stream: str, group: str, lease_s: float) -> None:
        self._redis: Any = redis.Redis.from_url(url, decode_responses=True, socket_timeout=None)
        self.stream = stream
        self.group = group
        self._lease_ms = int(lease_s * 1000)
        self._held: dict[str, str] = {}  # entry id -> the consumer it was delivered to
        try:  # from the stream's start, so ids pushed before the first worker started are read too
            self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def push(self, job_ids: Sequence[str]) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.xadd(self.stream, {"job": job_id})
            pipe.execute()

    def pull(self, consumer: str, timeout_s: float) -> Delivery | None:
        # First a delivery another consumer left unacknowledged past the lease (it crashed or stalled).
        _, claimed, _ = self._redis.xautoclaim(
            self.stream, self.group, consumer, min_idle_time=self._lease_ms, start_id="0-0", count=1
        )
        entries = [(msg_id, fields) for msg_id, fields in claimed if fields]
        if not entries:
            block = max(1, int(timeout_s * 1000))
            reply = self._redis.xreadgroup(self.group, consumer, {self.stream: ">"}, count=1, block=block)
            entries = [e for _, msgs in reply or [] for e in msgs]
        if not entries:
            return None
        msg_id, fields = entries[0]
        self._held[msg_id] = consumer
        return Delivery(job_id=fields["job"], token=msg_id)

    def ack(self, delivery: Delivery) -> None:
        self._held.pop(delivery.token, None)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, delivery.token)
            pipe.xdel(self.stream, delivery.token)
            pipe.execute()

    def touch(self, delivery: Delivery) -> None:
        consumer = self._held.get(delivery.token)
        if consumer is not None:  # claiming an entry one holds resets its idle time: the lease restarts
            self._redis.xclaim(self.stream, self.group, consumer, 0, [delivery.token], justid=True)

    def depth(self) -> int:
        return int(self._redis.xlen(self.stream))

    def close(self) -> None:
        self._redis.close()
