"""`memsvc` command line: serve, mcp, keys, ingest, recall, export/import, purge, eval."""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from memsvc.config import Settings

app = typer.Typer(help="memsvc: long-term memory service for AI agents.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
gates_app = typer.Typer(help="The learned gate model.", no_args_is_help=True)
app.add_typer(gates_app, name="gates")
skills_app = typer.Typer(help="The skill bank.", no_args_is_help=True)
app.add_typer(skills_app, name="skills")


@skills_app.command("design")
def skills_design(
    table: Annotated[Path, typer.Option("--table", help="design table written by `memsvc train skills`")] = Path(
        "eval-out/skills-cache/design-locomo-realtalk.json.gz"),
    bank: Annotated[Path | None, typer.Option("--bank", help="skill bank folder (default the repository's skills/)")] = None,
    max_changes: Annotated[int, typer.Option("--max-changes", min=1)] = 3,
    use_llm: Annotated[bool, typer.Option("--llm/--no-llm", help="also ask the configured LLM (MEMSVC_LLM__*)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="score proposals, change no card")] = False,
    holdout: Annotated[float, typer.Option("--holdout", min=0.0, max=0.9,
                                           help="share of the conversations held out: a change must not lower their score")] = 0.3,
) -> None:
    """Mine hard cases and refine the cards; a change is kept (version + 1, history line) only when
    the development score improves on the design conversations and does not fall on the held-out
    ones. The same work runs as the `skills.design` job."""
    from memsvc.skills import load_skill_bank
    from memsvc.skills.designer import DesignTable, design
    from storage.registry import SKILLS_DIR, build_llm

    folder = bank or SKILLS_DIR
    if not table.is_file():
        raise typer.BadParameter(f"no design table at {table} (run `memsvc train skills` first)")
    llm = build_llm(load_settings()) if use_llm else None
    report = design(DesignTable.load(table), load_skill_bank(folder), bank_dir=None if dry_run else folder,
                    llm=llm, max_changes=max_changes, holdout=holdout)
    typer.echo(json.dumps(report, indent=2, default=str))

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="data directory (default ./data or MEMSVC_DATA_DIR)")]
Tenant = Annotated[str, typer.Option("--tenant", help="tenant the data belongs to")]


_SECRET = re.compile(r"secret|password|api_key|token", re.I)


def load_settings() -> Settings:
    """The environment's settings; invalid ones end the command with each bad setting named (exit 2),
    not a traceback."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"])
            value = e["input"]
            # a rejected key or password stays out of logs, and so does a whole section's (its url, api_key …)
            if isinstance(value, dict):
                shown = "fields " + ", ".join(sorted(map(str, value))) if value else "no fields"
            else:
                shown = "***" if _SECRET.search(where) else repr(value)
            lines.append(f"  {where}: {e['msg']} (got {shown})")
        typer.echo("memsvc: invalid settings (MEMSVC_<SECTION>__<FIELD> environment variables; "
                   "README, Configuration):\n" + "\n".join(lines), err=True)
        raise typer.Exit(2) from None


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    settings = load_settings()
    updates = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        updates["data_dir"] = data_dir
    return settings.model_copy(update=updates)


def _memory_os(data_dir: Path | None) -> Any:
    from storage.registry import build_memory_os

    return build_memory_os(_settings(data_dir))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run the REST API (embedded defaults: SQLite, Qdrant edge shard, local MiniLM)."""
    import uvicorn

    from api.app import create_app

    settings = _settings(data_dir, host=host, port=port)
    typer.echo(f"memsvc: data in {settings.data_dir.resolve()}, listening on http://{settings.host}:{settings.port}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


@app.command()
def worker(data_dir: DataDir = None) -> None:
    """Run background jobs only (no API): `wait: false` writes, outbox retries, sweeps. Several
    workers and API nodes share one queue with `MEMSVC_JOBS__KIND=redis`; stop with SIGTERM or Ctrl-C
    (a running job that does not finish within seconds is handed back and resumes elsewhere)."""
    import signal
    import threading

    from api.app import settle_heap
    from storage.registry import build_memory_os

    settings = _settings(data_dir)
    if settings.jobs.workers < 1:
        raise typer.BadParameter("a worker needs MEMSVC_JOBS__WORKERS >= 1")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    os_ = build_memory_os(settings)
    settle_heap()
    typer.echo(f"memsvc worker {os_.jobs.owner}: {settings.jobs.workers} thread(s) on the {settings.jobs.kind} queue")
    try:
        stop.wait()
    finally:
        os_.close()


@gates_app.command("serve")
def gates_serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8090,
    path: Annotated[Path | None, typer.Option("--path", help="artefact folder (default: the packaged one)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16")] = "auto",
    cross: Annotated[bool, typer.Option("--cross/--no-cross", help="serve the cross-encoder stage when its artefact "
                                        "is present")] = True,
    cross_path: Annotated[Path | None, typer.Option("--cross-path", help="the cross-encoder's artefact folder "
                                                    "(default: the packaged one)")] = None,
    token: Annotated[str | None, typer.Option(envvar="MEMSVC_GATES__TOKEN", show_default=False,
                                              help="shared secret the API nodes send; set it in the environment "
                                                   "(MEMSVC_GATES__TOKEN), not on the command line")] = None,
) -> None:
    """Serve the gate model to API nodes (`MEMSVC_GATES__KIND=remote`, `MEMSVC_GATES__URL`, and
    `MEMSVC_GATES__TOKEN` when the worker has one)."""
    import uvicorn

    from api.app import settle_heap
    from api.gates_server import create_gates_app
    from storage.gates.local import TorchGateModel

    model = TorchGateModel(path, device=device, precision=precision, cross=(cross_path or True) if cross else False)
    info = model.describe()
    typer.echo(f"memsvc gates: {info['name']} v{info['version']} heads={info['heads']} on {info['device']} "
               f"({info['dtype']}), listening on http://{host}:{port}"
               + (" (token required)" if token else " (no token: keep it on a network only the API nodes reach)"))
    gates = create_gates_app(model, token=token or None)
    settle_heap()
    uvicorn.run(gates, host=host, port=port, log_level="warning")


@app.command()
def mcp(
    url: Annotated[str, typer.Option("--url", envvar="MEMSVC_URL", help="memsvc REST base URL")] = "http://127.0.0.1:8080",
    key: Annotated[str | None, typer.Option("--key", envvar="MEMSVC_API_KEY", help="API key (Bearer)")] = None,
) -> None:
    """MCP server over stdio for desktop agents; its tools reach a running memsvc over REST (`--url`, `--key`)."""
    import anyio

    from api.mcp_stdio import serve_stdio

    if not key:
        raise typer.BadParameter("an API key is needed: --key or MEMSVC_API_KEY", param_hint="--key")
    anyio.run(serve_stdio, url, key)


@contextmanager
def _records(data_dir: Path | None) -> Iterator[Any]:
    """The migrated record store of the settings (keys live there), closed afterwards."""
    from storage.registry import RECORDS

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    records = RECORDS[settings.records.kind](settings.records, settings)
    try:
        records.migrate()
        yield records
    finally:
        records.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w` as a positive duration."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text.lower())
    if match is None or int(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a positive duration such as 90s, 15m, 12h, 30d or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _expiry(expires_in: str | None, expires_at: str | None) -> datetime | None:
    from memsvc.models import as_utc, utcnow

    if expires_in and expires_at:
        raise typer.BadParameter("give --expires-in or --expires-at, not both")
    if expires_in:
        return utcnow() + parse_duration(expires_in)
    if not expires_at:
        return None
    try:
        when = as_utc(datetime.fromisoformat(expires_at))
    except (ValueError, OverflowError):
        raise typer.BadParameter(f"{expires_at!r}: expected an ISO 8601 time, e.g. 2027-01-31T00:00:00Z") from None
    assert when is not None
    if when <= utcnow():
        raise typer.BadParameter(f"{expires_at!r} is in the past")
    return when


ExpiresIn = Annotated[str | None, typer.Option("--expires-in", help="lifetime, e.g. 30d, 12h, 2w (default: never)")]
ExpiresAt = Annotated[str | None, typer.Option("--expires-at", help="expiry as ISO 8601, e.g. 2027-01-31T00:00:00Z")]
KeyRef = Annotated[str, typer.Argument(help="key id or prefix (as `memsvc keys list` shows)")]


def _role(admin: bool, read_only: bool) -> str:
    return "admin" if admin else "read-only" if read_only else "standard"


def _find_key(records: Any, ref: str) -> Any:
    found = [k for k in records.list_keys() if ref in (k.id, k.prefix)]
    if len(found) != 1:
        typer.echo(f"no key {ref!r}" if not found else f"{ref!r} matches {len(found)} keys; give the id", err=True)
        raise typer.Exit(1)
    return found[0]


@keys_app.command("create")
def keys_create(
    tenant: Tenant,
    admin: Annotated[bool, typer.Option("--admin", help="may use the admin UI")] = False,
    read_only: Annotated[bool, typer.Option("--read-only", help="may read but not change")] = False,
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from api.auth import create_key
    from memsvc.errors import InvalidInput

    expiry = _expiry(expires_in, expires_at)
    with _records(data_dir) as records:
        try:
            key, plaintext = create_key(records, tenant, admin=admin, read_only=read_only, expires_at=expiry)
        except InvalidInput as exc:
            raise typer.BadParameter(exc.message, param_hint="--tenant") from None
    until = f", expires {expiry.isoformat()}" if expiry else ""
    typer.echo(f"created {_role(admin, read_only)} key {key.prefix}… for tenant {tenant!r}{until}; "
               "store it now, it is not shown again:")
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per key")] = False,
    data_dir: DataDir = None,
) -> None:
    """Keys with id, prefix, tenant, flags, created, expires and revoked; never the secret or its hash."""
    with _records(data_dir) as records:
        keys = records.list_keys(tenant)
    rows = [{
        "id": k.id, "prefix": k.prefix, "tenant": k.tenant, "flags": _role(k.admin, k.read_only),
        "created": k.created_at.isoformat(), "expires": k.expires_at.isoformat() if k.expires_at else None,
        "revoked": k.revoked, "usable": k.usable(),
    } for k in keys]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    cols = ["id", "prefix", "tenant", "flags", "created", "expires", "revoked"]
    table = [cols] + [[str(r[c]) if r[c] is not None else "-" for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    for line in table:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def keys_revoke(key_ref: KeyRef, data_dir: DataDir = None) -> None:
    """Revoke a key now: every request with it (and its admin sessions) gets 401 from then on."""
    with _records(data_dir) as records:
        key = _find_key(records, key_ref)
        records.update_key(key.model_copy(update={"revoked": True}))
    typer.echo(f"revoked key {key.prefix}… ({key.id}) of tenant {key.tenant!r}")


@keys_app.command("rotate")
def keys_rotate(
    key_ref: KeyRef,
    grace: Annotated[str | None, typer.Option("--grace", help="keep the old key working this long, e.g. 1h")] = None,
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    data_dir: DataDir = None,
) -> None:
    """A new key for the same tenant and flags; the old one is revoked (or expires after --grace).

    The new key is printed once, alone on the last line."""
    from api.auth import create_key
    from memsvc.models import utcnow

    expiry = _expiry(expires_in, expires_at)
    with _records(data_dir) as records:
        old = _find_key(records, key_ref)
        if not old.usable():
            typer.echo(f"key {old.prefix}… is already revoked or expired", err=True)
            raise typer.Exit(1)
        key, plaintext = create_key(records, old.tenant, admin=old.admin, read_only=old.read_only, expires_at=expiry)
        if grace:
            end = utcnow() + parse_duration(grace)
            end = min(end, old.expires_at) if old.expires_at else end
            records.update_key(old.model_copy(update={"expires_at": end}))
            fate = f"expires {end.isoformat()}"
        else:
            records.update_key(old.model_copy(update={"revoked": True}))
            fate = "revoked"
    typer.echo(f"rotated key {old.prefix}… ({fate}) of tenant {old.tenant!r}; new key {key.prefix}…, "
               "store it now, it is not shown again:")
    typer.echo(plaintext)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    stream = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    try:
        for n, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise typer.BadParameter(f"line {n}: {exc}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="JSONL file of messages (or - for stdin)")],
    tenant: Tenant,
    infer: Annotated[bool, typer.Option(help="derive semantic/refined memories")] = True,
    batch: Annotated[int, typer.Option(help="messages per write")] = 100,
    data_dir: DataDir = None,
) -> None:
    """Write messages from JSONL: {"user_id", "session_id"?, "agent_id"?, "id"?, "role", "name"?, "content", "timestamp"?} per line."""
    from tqdm import tqdm

    from memsvc.schemas import WriteRequest

    rows = list(_read_jsonl(path))
    os_ = _memory_os(data_dir)
    written = skipped = 0
    try:
        with tqdm(total=len(rows), unit="msg", desc="ingest") as bar:
            key = lambda r: (r.get("user_id"), r.get("session_id"), r.get("agent_id"))  # noqa: E731
            for (user_id, session_id, agent_id), group in itertools.groupby(rows, key=key):
                group_rows = list(group)
                for i in range(0, len(group_rows), batch):
                    chunk = group_rows[i: i + batch]
                    req = WriteRequest.model_validate({
                        "user_id": user_id, "session_id": session_id, "agent_id": agent_id, "infer": infer,
                        "messages": [{k: v for k, v in r.items() if k not in ("user_id", "session_id", "agent_id")} for r in chunk],
                    })
                    result = os_.add(tenant, req, actor="cli")
                    written += len(result.written)
                    skipped += len(result.skipped)
                    bar.update(len(chunk))
    finally:
        os_.close()
    typer.echo(json.dumps({"messages": len(rows), "memories_written": written, "skipped": skipped}))


@app.command()
def recall(
    query: Annotated[str, typer.Argument(help="what to recall")],
    tenant: Tenant,
    user: Annotated[str, typer.Option("--user", help="user id")],
    top_k: Annotated[int, typer.Option(help="results")] = 10,
    token_budget: Annotated[int | None, typer.Option(help="token budget")] = None,
    explain: Annotated[bool, typer.Option(help="include why")] = False,
    data_dir: DataDir = None,
) -> None:
    """Search a user's memories and print the results as JSON."""
    from memsvc.schemas import SearchRequest

    os_ = _memory_os(data_dir)
    try:
        res = os_.search(tenant, SearchRequest(user_id=user, query=query, top_k=top_k, token_budget=token_budget, explain=explain))
    finally:
        os_.close()
    typer.echo(res.model_dump_json(indent=2))


@app.command("export")
def export_cmd(
    tenant: Tenant,
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (- for stdout)")] = Path("-"),
    user: Annotated[str | None, typer.Option("--user", help="only this user")] = None,
    data_dir: DataDir = None,
) -> None:
    """Export memories with their full version history as JSONL."""
    os_ = _memory_os(data_dir)
    count = 0
    stream = sys.stdout if str(out) == "-" else out.open("w", encoding="utf-8")
    try:
        for record in os_.export(tenant, user):
            stream.write(json.dumps(record, sort_keys=True) + "\n")
            count += 1
    finally:
        if stream is not sys.stdout:
            stream.close()
        os_.close()
    typer.echo(f"exported {count} memories", err=True)


@app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="JSONL written by `memsvc export`")],
    tenant: Tenant,
    data_dir: DataDir = None,
) -> None:
    """Import memories exported by `memsvc export` (ids, versions and history kept)."""
    os_ = _memory_os(data_dir)
    try:
        n = os_.import_records(tenant, _read_jsonl(path), actor="cli")
    finally:
        os_.close()
    typer.echo(json.dumps({"imported": n}))


@app.command()
def purge(
    tenant: Tenant,
    user: Annotated[str, typer.Option("--user", help="user to remove everywhere")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    data_dir: DataDir = None,
) -> None:
    """Delete everything about a user (records, vectors, graph, logs)."""
    if not yes:
        typer.confirm(f"Delete every memory of user {user!r} in tenant {tenant!r}?", abort=True)
    os_ = _memory_os(data_dir)
    try:
        counts = os_.purge_user(tenant, user, actor="cli")
        os_.jobs.wait_idle(600, kind="vectors.compact")  # the purged points leave the vector files too
    finally:
        os_.close()
    typer.echo(json.dumps({"user_id": user, "deleted": counts}))


@app.command()
def reconcile(
    full: Annotated[bool, typer.Option("--full", help="read every point and memory (after restoring a backup)")] = False,
    data_dir: DataDir = None,
) -> None:
    """Compare SQL with the vector index and the graph now and repair drift; print the counts.
    Without `--full`, tenants checked before read only what changed since their last run."""
    os_ = _memory_os(data_dir)
    try:
        result = os_.reconciler.reconcile(full=full)
    finally:
        os_.close()
    typer.echo(json.dumps(result.as_dict()))


def _mount_eval() -> None:
    try:
        from evals.cli import eval_app
    except ImportError:  # evals not installed
        return
    app.add_typer(eval_app, name="eval", help="Run the evaluation suite.")
    import evals.retention  # noqa: F401  (registers `eval retention` and `train retention`)
    import evals.train_cross  # noqa: F401  (registers `train cross` on train_app)
    import evals.train_skills  # noqa: F401  (registers `train skills` on train_app)
    from evals.train_gates import train_app

    app.add_typer(train_app, name="train", help="Train the learned parts on the development data.")


_mount_eval()


if __name__ == "__main__":
    app()
