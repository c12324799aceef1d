"""The app factory: settings in, a FastAPI app out; backends are opened in the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.routing import Route

from api import admin, errors
from api.deps import reject_nul
from api.mcp import McpHttp
from api.middleware import (
    BodyLimitMiddleware,
    GateCollector,
    LifecycleCollector,
    Metrics,
    MetricsMiddleware,
    OutboxCollector,
    RetentionCollector,
)
from api.ratelimit import TokenBuckets
from api.routes import memories, system, users
from memsvc.config import Settings
from memsvc.memory_os import MemoryOS


def settle_heap() -> None:
    """Take what start-up loaded (torch, the models, the backends: about 560k objects) out of the
    cyclic garbage collector's walks. Without it every full collection walks them all, a pause of
    every thread of about 150 ms (127-192 ms measured on 2 cores) that lands on a search every few
    hundred requests; after it, 0.2-0.4 ms. What start-up left is still freed by reference counting
    when it is dropped; only a reference cycle through it is never collected."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, memory_os: MemoryOS | None = None) -> FastAPI:
    """Build the app. With `memory_os` given the caller owns it; otherwise the lifespan builds and closes one."""
    settings = settings or (memory_os.settings if memory_os else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with mcp_http.run():  # the MCP session manager lives as long as the app
            if memory_os is not None:
                app.state.memory_os = memory_os
                yield
                return
            from storage.registry import build_memory_os

            os_ = build_memory_os(settings)
            app.state.memory_os = os_
            settle_heap()
            try:
                yield
            finally:
                os_.close()

    app = FastAPI(
        title="memsvc", version="0.1.0", lifespan=lifespan,
        description="Long-term memory for AI agents: write what happened, recall what matters, with provenance.",
        dependencies=[Depends(reject_nul)],
    )
    app.state.settings = settings
    if memory_os is not None:  # also serves transports that do not run the lifespan (ASGITransport)
        app.state.memory_os = memory_os
    app.state.metrics = Metrics()
    app.state.metrics.registry.register(OutboxCollector(lambda: app.state.memory_os.outbox.stats()))
    app.state.metrics.registry.register(LifecycleCollector(lambda: app.state.memory_os.lifecycle_stats()))
    app.state.metrics.registry.register(RetentionCollector(lambda: app.state.memory_os))
    app.state.metrics.registry.register(GateCollector(lambda: app.state.memory_os))
    app.state.rate_limits = TokenBuckets(settings.limits.rate_per_key, settings.limits.rate_burst)
    errors.install(app)
    app.include_router(memories.router)
    app.include_router(users.router)
    app.include_router(system.router)
    admin.install(app)  # /admin: the operator UI (its router also serves its static files)
    # /mcp: MCP tools over streamable HTTP, same keys and tenant scoping as REST (not in the OpenAPI).
    mcp_http = McpHttp(lambda: app.state.memory_os)
    app.router.routes.append(Route("/mcp", endpoint=mcp_http, methods=["GET", "POST", "DELETE"]))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    return app
