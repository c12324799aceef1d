"""A LangGraph `BaseStore` on memsvc (extra `memsvc-client[langchain]`).

Namespaces map to memsvc scopes explicitly, after an optional fixed `prefix` (e.g. `("memories",)`):

    (user_id,)                        the user's own items
    (user_id, agent_id)               one agent's items for that user
    (user_id, agent_id, session_id)   one conversation's items

Anything else (empty, deeper, another prefix, a part with `/` or whitespace) raises
`UnsupportedNamespace` instead of silently finding nothing. Searching needs at least the user
id (memsvc recall is per user); `list_namespaces` scans the tenant's memories.

An item is one episodic memory written with `infer=false`: its `content` is the value as
canonical JSON — what memsvc embeds and indexes, so `search(query=...)` is semantic search over
values — and its metadata holds `lg_key`, `lg_ns` and `lg_updated_at` (plain client keys; memsvc
reserves `_…` and `episode`). Exact lookups filter on `lg_key`/`lg_ns`, pushed down to the
vector index. A put on an existing key PATCHes the memory, so memsvc keeps every version.

Each operation is written once, as a generator of `Call`s; `batch` and `abatch` only drive it
with the sync or the async client.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from memsvc_client import _calls as calls
from memsvc_client.client import AsyncMemsvcClient, MemsvcClient
from memsvc_client.models import Memory, MemoryPatch, Message, SearchFilters, SearchRequest, WriteRequest

KEY, NS, UPDATED, MARK = "lg_key", "lg_ns", "lg_updated_at", "lg_item"
_ID = re.compile(r"^[^\s/]{1,256}$")
_Gen = Generator[calls.Call[Any], Any, Any]


class UnsupportedNamespace(InvalidNamespaceError):
    """A namespace that does not map to a memsvc user / agent / session scope."""


class _Scope:
    def __init__(self, user_id: str, agent_id: str | None, session_id: str | None) -> None:
        self.user_id, self.agent_id, self.session_id = user_id, agent_id, session_id


class MemsvcStore(BaseStore):
    """LangGraph long-term memory store backed by memsvc (see the module docstring for the mapping)."""

    supports_ttl = False

    def __init__(self, client: MemsvcClient | None = None, async_client: AsyncMemsvcClient | None = None, *,
                 prefix: tuple[str, ...] = ()) -> None:
        if client is None and async_client is None:
            raise ValueError("MemsvcStore needs a MemsvcClient, an AsyncMemsvcClient or both")
        self.client, self.async_client, self.prefix = client, async_client, tuple(prefix)

    # -- namespace mapping -------------------------------------------------------------
    def _parts(self, namespace: tuple[str, ...], *, what: str) -> tuple[str, ...]:
        ns = tuple(namespace)
        if ns[: len(self.prefix)] != self.prefix:
            raise UnsupportedNamespace(f"{what} {ns!r} does not start with this store's prefix {self.prefix!r}")
        rest = ns[len(self.prefix):]
        bad = [p for p in rest if not isinstance(p, str) or not _ID.match(p)]
        if bad:
            raise UnsupportedNamespace(f"{what} {ns!r}: parts must be ids without '/' or whitespace, got {bad!r}")
        if len(rest) > 3:
            raise UnsupportedNamespace(
                f"{what} {ns!r} is deeper than memsvc's scopes: use prefix + (user_id[, agent_id[, session_id]])")
        return rest

    def _scope(self, namespace: tuple[str, ...], *, what: str = "namespace") -> _Scope:
        rest = self._parts(namespace, what=what)
        if not rest:
            raise UnsupportedNamespace(
                f"{what} {tuple(namespace)!r} names no user: memsvc keeps memory per user, so give "
                f"{self.prefix + ('<user_id>',)!r} at least")
        return _Scope(rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)

    def _ns_of(self, memory: Memory) -> tuple[str, ...]:
        return self.prefix + tuple(str(memory.metadata.get(NS, "")).split("/"))

    # -- items ---------------------------------------------------------------------------
    def _item(self, memory: Memory, score: float | None = None, *, search: bool = False) -> Item:
        try:
            value = json.loads(memory.content)
        except ValueError:  # edited outside the store (e.g. through MCP `update`)
            value = {"content": memory.content}
        if not isinstance(value, dict):
            value = {"value": value}
        updated = memory.metadata.get(UPDATED)
        created = memory.created_at
        fields: dict[str, Any] = {
            "namespace": self._ns_of(memory), "key": str(memory.metadata[KEY]), "value": value,
            "created_at": created, "updated_at": datetime.fromisoformat(updated) if updated else created}
        return SearchItem(score=score, **fields) if search else Item(**fields)

    @staticmethod
    def _meta(ns: str, key: str) -> dict[str, Any]:
        return {KEY: key, NS: ns, MARK: True, UPDATED: datetime.now(UTC).isoformat()}

    def _find(self, scope: _Scope, ns: str, key: str) -> _Gen:
        """The memory holding (ns, key): an exact metadata filter, pushed down to the vector index."""
        req = SearchRequest(user_id=scope.user_id, query=key, top_k=5, types=["episodic"], preset="dense",
                            filters=SearchFilters(agent_id=scope.agent_id, session_id=scope.session_id,
                                                  metadata={KEY: key, NS: ns, MARK: True}))
        res = yield calls.search(req)
        for hit in res.results:
            if hit.metadata.get(KEY) == key and hit.metadata.get(NS) == ns and hit.status == "active":
                return hit
        return None

    # -- the operations, each once -------------------------------------------------------
    def _get(self, op: GetOp) -> _Gen:
        scope = self._scope(op.namespace)
        hit = yield from self._find(scope, "/".join(self._parts(op.namespace, what="namespace")), op.key)
        return None if hit is None else self._item(hit)

    def _put(self, op: PutOp) -> _Gen:
        scope = self._scope(op.namespace)
        if getattr(op, "ttl", None) is not None:
            raise NotImplementedError("MemsvcStore has no TTL: memsvc's retention decides what is kept")
        ns = "/".join(self._parts(op.namespace, what="namespace"))
        hit = yield from self._find(scope, ns, op.key)
        if op.value is None:
            if hit is not None:
                yield calls.delete(hit.id)
            return None
        content = json.dumps(dict(op.value), sort_keys=True, ensure_ascii=False, default=str)
        if hit is not None:
            yield calls.update(hit.id, MemoryPatch(content=content, metadata={**{k: v for k, v in hit.metadata.items() if not k.startswith("_")}, **self._meta(ns, op.key)}))
            return None
        yield calls.add(WriteRequest(
            user_id=scope.user_id, agent_id=scope.agent_id, session_id=scope.session_id, infer=False,
            metadata=self._meta(ns, op.key), messages=[Message(role="user", content=content)]))
        return None

    def _in_prefix(self, memory: Memory, prefix: tuple[str, ...]) -> bool:
        return bool(memory.metadata.get(MARK)) and memory.status == "active" \
            and self._ns_of(memory)[: len(prefix)] == prefix

    def _search(self, op: SearchOp) -> _Gen:
        scope = self._scope(op.namespace_prefix, what="namespace prefix")
        prefix = tuple(op.namespace_prefix)
        if op.query:
            # Fetch more than asked when filtering afterwards; memsvc returns at most 200.
            want = 200 if op.filter else min(200, op.offset + op.limit)
            req = SearchRequest(user_id=scope.user_id, query=op.query, top_k=max(1, want), types=["episodic"],
                                filters=SearchFilters(agent_id=scope.agent_id, session_id=scope.session_id,
                                                      metadata={MARK: True}))
            res = yield calls.search(req)
            ranked = sorted(res.results, key=lambda h: h.rank)  # best first, as a store search returns
            found = [self._item(h, h.score, search=True) for h in ranked if self._in_prefix(h, prefix)]
        else:
            found = []
            cursor: str | None = None
            while True:
                page = yield calls.list_memories(scope.user_id, types=["episodic"], statuses=["active"],
                                                 limit=500, cursor=cursor)
                found += [self._item(m, search=True) for m in page.items if self._in_prefix(m, prefix)]
                if not page.next_cursor:
                    break
                cursor = page.next_cursor
        if op.filter:
            found = [i for i in found if _matches(i.value, op.filter)]
        return found[op.offset: op.offset + op.limit]

    def _list_namespaces(self, op: ListNamespacesOp) -> _Gen:
        seen: set[tuple[str, ...]] = set()
        cursor: str | None = None
        while True:  # memsvc has no namespace index: scan the tenant's store items
            page = yield calls.list_memories(None, types=["episodic"], statuses=["active"], limit=500, cursor=cursor)
            for m in page.items:
                if m.metadata.get(MARK):
                    ns = self._ns_of(m)
                    if all(_condition(ns, c) for c in op.match_conditions or ()):
                        seen.add(ns[: op.max_depth] if op.max_depth is not None else ns)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        return sorted(seen)[op.offset: op.offset + op.limit]

    def _op(self, op: Op) -> _Gen:
        if isinstance(op, GetOp):
            return self._get(op)
        if isinstance(op, PutOp):
            return self._put(op)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise NotImplementedError(f"MemsvcStore does not handle {type(op).__name__}")

    # -- drivers: the only sync / async difference ---------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        if self.client is None:
            raise ValueError("MemsvcStore.batch needs a MemsvcClient (this store was given only an async one)")
        client = self.client
        out: list[Result] = []
        for op in ops:
            gen = self._op(op)
            try:
                call = next(gen)
                while True:
                    call = gen.send(client._run(call))
            except StopIteration as stop:
                out.append(stop.value)
        return out

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        if self.async_client is None:
            return await asyncio.to_thread(self.batch, list(ops))
        client = self.async_client
        out: list[Result] = []
        for op in ops:
            gen = self._op(op)
            try:
                call = next(gen)
                while True:
                    call = gen.send(await client._run(call))
            except StopIteration as stop:
                out.append(stop.value)
        return out


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b, "$gt": lambda a, b: a is not None and a > b,
    "$gte": lambda a, b: a is not None and a >= b, "$lt": lambda a, b: a is not None and a < b,
    "$lte": lambda a, b: a is not None and a <= b,
}


def _matches(value: dict[str, Any], flt: dict[str, Any]) -> bool:
    """LangGraph's filter: equality per key, or {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": x}."""
    for key, want in flt.items():
        have = value.get(key)
        if isinstance(want, dict) and want and all(k.startswith("$") for k in want):
            for name, arg in want.items():
                if name not in _OPS:
                    raise ValueError(f"unsupported filter operator {name!r}")
                if not _OPS[name](have, arg):
                    return False
        elif have != want:
            return False
    return True


def _condition(ns: tuple[str, ...], cond: MatchCondition) -> bool:
    path = tuple(cond.path)
    if len(path) > len(ns):
        return False
    part = ns[: len(path)] if cond.match_type == "prefix" else ns[len(ns) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))
