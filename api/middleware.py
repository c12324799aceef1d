"""ASGI middleware: request body size limit and Prometheus request metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Rejects bodies over `max_bytes` with 413, by Content-Length or, for chunked bodies, while reading.

    The body is read in full before the app sees it, so an oversized one never reaches a parser
    (which would turn a failing read into a 400).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"error": {
            "code": "payload_too_large", "message": f"request body larger than {self.max_bytes} bytes",
        }}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    """A `receive` that yields the buffered body once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if pending is not None:
                return pending
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await receive()

    return replay


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("memsvc_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "memsvc_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class OutboxCollector(Collector):
    """The outbox's backlog, read from the record store at scrape time (every node reports the same
    shared numbers)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self._stats()
        except Exception:  # no memory OS yet, or the record store is down: /readyz says which
            return
        for name in ("pending", "retrying", "dead"):
            yield GaugeMetricFamily(f"memsvc_outbox_{name}", f"outbox entries {name}", value=stats[name])
        yield GaugeMetricFamily("memsvc_outbox_oldest_age_seconds", "age of the oldest outbox entry not done nor dead",
                                value=stats["oldest_age_s"])


class LifecycleCollector(Collector):
    """Memories per lifecycle status, jobs per kind and state (the queue depth by kind is `pending`),
    and this node's job runs and run time per kind; read at scrape time (`MemoryOS.lifecycle_stats`)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self._stats()
        except Exception:  # no memory OS yet, or the record store is down: /readyz says which
            return
        memories = GaugeMetricFamily("memsvc_memories", "memories per lifecycle status", labels=["status"])
        for status, n in stats["memories"].items():
            memories.add_metric([status], n)
        yield memories
        jobs = GaugeMetricFamily("memsvc_jobs", "stored jobs per kind and state (pending: the queue depth)",
                                 labels=["kind", "state"])
        for kind, states in sorted(stats["jobs"].items()):
            for state, n in states.items():
                jobs.add_metric([kind, state], n)
        yield jobs
        yield GaugeMetricFamily("memsvc_job_queue_depth", "job ids waiting in this node's queue", value=stats["queue_depth"])
        runs = GaugeMetricFamily("memsvc_job_runs", "job runs this node finished, per kind and outcome",
                                 labels=["kind", "outcome"])
        seconds = GaugeMetricFamily("memsvc_job_run_seconds", "summed run time of this node's finished job runs",
                                    labels=["kind"])
        for kind, st in sorted(stats["runs"].items()):
            for outcome in ("done", "failed", "retried"):
                runs.add_metric([kind, outcome], st[outcome])
            seconds.add_metric([kind], round(st["seconds"], 6))
        yield runs
        yield seconds


class RetentionCollector(Collector):
    """This node's retention sweeps: runs, memories archived, run time (the counts by lifecycle
    status are `LifecycleCollector`'s `memsvc_memories`)."""

    def __init__(self, memory_os: Callable[[], Any]) -> None:
        self._os = memory_os

    def collect(self) -> Iterator[Metric]:
        try:
            sweeper = self._os().retention
        except Exception:  # no memory OS yet
            return
        with sweeper._lock:
            runs, archived, seconds = sweeper.stats.runs, sweeper.stats.archived, sweeper.stats.seconds
        yield CounterMetricFamily("memsvc_retention_archived", "memories archived by retention sweeps (this node)",
                                  value=archived)
        summary = SummaryMetricFamily("memsvc_retention_sweep_seconds", "retention sweep durations (this node)")
        summary.add_metric([], count_value=runs, sum_value=seconds)
        yield summary


class GateCollector(Collector):
    """Calls to the gate model that fell back to the heuristic twin on this node, per head
    (`memsvc.gating`: a remote gate worker out of reach)."""

    def __init__(self, memory_os: Callable[[], Any]) -> None:
        self._os = memory_os

    def collect(self) -> Iterator[Metric]:
        from memsvc.learn.gates import HEADS

        try:
            counts = self._os().gate_fallbacks.counts()
        except Exception:  # no memory OS yet
            return
        family = CounterMetricFamily("memsvc_gate_fallbacks", "gate calls answered by the heuristic twin (this node)",
                                     labels=["head"])
        for head in HEADS:
            family.add_metric([head], counts.get(head, 0))
        yield family


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        start = time.perf_counter()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - start)
