"""The CLI in-process: ingest, recall, export → import → export (lossless), purge, keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from memsvc.schemas import MemoryPatch
from storage.registry import build_memory_os
from tests.api.conftest import make_settings

runner = CliRunner()

MESSAGES = [
    {"user_id": "alice", "session_id": "s1", "id": "m1", "role": "user", "name": "Alice",
     "content": "I moved to Berlin in May 2023.", "timestamp": "2023-05-20T10:00:00Z"},
    {"user_id": "alice", "session_id": "s1", "id": "m2", "role": "user", "name": "Alice",
     "content": "My cat is called Miso.", "timestamp": "2023-05-20T10:01:00Z"},
    {"user_id": "bob", "id": "b1", "role": "user", "name": "Bob", "content": "I love sailing."},
]


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ingest_recall_export_import_purge(tmp_path: Path) -> None:
    src = tmp_path / "messages.jsonl"
    src.write_text("\n".join(json.dumps(m) for m in MESSAGES) + "\n")
    d1, d2 = tmp_path / "one", tmp_path / "two"
    out = invoke("ingest", str(src), "--tenant", "t", "--data-dir", str(d1))
    # three turns, Alice's residence and cat's name (slots: never vetoed); Bob's "I love sailing." keeps
    # only its turn, a restatement the default controller's policy vetoes
    assert json.loads(out.strip().splitlines()[-1]) == {"messages": 3, "memories_written": 5, "skipped": 0}
    again = invoke("ingest", str(src), "--tenant", "t", "--data-dir", str(d1))
    assert json.loads(again.strip().splitlines()[-1])["skipped"] == 3

    os_ = build_memory_os(make_settings(d1))
    try:
        cat = next(c for c in os_.records.iter_memories("t", "alice") if c.content == "Alice: My cat is called Miso.")
        os_.update("t", cat.id, MemoryPatch(content="Alice: My cat is called Mochi."))
    finally:
        os_.close()

    res = json.loads(invoke("recall", "Where does Alice live?", "--tenant", "t", "--user", "alice", "--data-dir", str(d1)))
    assert "Berlin" in min(res["results"], key=lambda r: r["rank"])["content"]

    e1, e2 = tmp_path / "e1.jsonl", tmp_path / "e2.jsonl"
    invoke("export", "--tenant", "t", "--out", str(e1), "--data-dir", str(d1))
    records = [json.loads(line) for line in e1.read_text().splitlines()]
    assert sum(r["kind"] == "memory" for r in records) == 5
    assert sum(r["kind"] == "message" for r in records) == 3
    edited = next(r for r in records if r["id"] == cat.id)
    assert [v["change"] for v in edited["history"]] == ["create", "update"]

    assert json.loads(invoke("import", str(e1), "--tenant", "t", "--data-dir", str(d2)))["imported"] == 5
    invoke("export", "--tenant", "t", "--out", str(e2), "--data-dir", str(d2))
    assert sorted(e2.read_text().splitlines()) == sorted(e1.read_text().splitlines())
    res = json.loads(invoke("recall", "What is the cat called?", "--tenant", "t", "--user", "alice", "--data-dir", str(d2)))
    assert "Alice: My cat is called Mochi." in [r["content"] for r in res["results"]]

    purged = json.loads(invoke("purge", "--tenant", "t", "--user", "alice", "--yes", "--data-dir", str(d2)))
    assert purged["deleted"]["memories"] == 4
    res = json.loads(invoke("recall", "Berlin", "--tenant", "t", "--user", "alice", "--data-dir", str(d2)))
    assert res["results"] == []


def test_reconcile_repairs_drift_and_reads_everything_when_asked(tmp_path: Path) -> None:
    src = tmp_path / "messages.jsonl"
    src.write_text("\n".join(json.dumps(m) for m in MESSAGES) + "\n")
    invoke("ingest", str(src), "--tenant", "t", "--data-dir", str(tmp_path))
    first = json.loads(invoke("reconcile", "--data-dir", str(tmp_path)))
    assert (first["full_passes"], first["memories_scanned"], first["repaired"]) == (1, 5, 0)  # never checked: full
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        lost = next(c.id for c in os_.records.iter_memories("t", "bob"))
        os_.vectors.delete([lost])  # drift no change marks, as a restored vector backup leaves it
    finally:
        os_.close()
    forced = json.loads(invoke("reconcile", "--full", "--data-dir", str(tmp_path)))
    assert (forced["full_passes"], forced["missing_points"]) == (1, 1)
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        assert set(os_.vectors.states([lost])) == {lost}
    finally:
        os_.close()


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    out = invoke("keys", "create", "--tenant", "demo", "--admin", "--data-dir", str(tmp_path))
    key = out.strip().splitlines()[-1]
    assert key.startswith("msk_") and " " not in key


def test_an_import_with_an_id_that_is_not_a_uuid_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    from memsvc.errors import InvalidInput

    good = {"kind": "memory", "id": "00000000-0000-4000-8000-000000000001", "user_id": "alice", "type": "semantic",
            "content": "Alice lives in Berlin.", "source_ids": []}
    os_ = build_memory_os(make_settings(tmp_path))
    try:
        with pytest.raises(InvalidInput, match="not a UUID"):
            os_.import_records("t", [good, {**good, "id": "berlin-fact"}])
        assert list(os_.records.iter_memories("t")) == []
        assert os_.import_records("t", [good]) == 1
    finally:
        os_.close()


def test_invalid_settings_end_a_command_with_the_setting_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSVC_GATES__URL", "http://127.0.0.1:8090")  # a remote gate's field, kind left local
    monkeypatch.setenv("MEMSVC_PORT", "not-a-port")
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert "memsvc: invalid settings" in result.stderr
    assert "gates.local.url: Extra inputs are not permitted (got 'http://127.0.0.1:8090')" in result.stderr
    assert "port: Input should be a valid integer" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert not (tmp_path / "data").exists()  # nothing was started or written


def test_an_invalid_secret_is_named_but_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSVC_ADMIN__SECRET", "too-short-to-sign-with")  # at least 32 characters
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "admin.secret: String should have at least 32 characters (got ***)" in result.stderr
    assert "too-short-to-sign-with" not in result.stderr


def test_a_rejected_section_is_named_with_its_fields_not_their_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSVC_LLM__KIND", "openia")  # a typo: the whole section is rejected, key and all
    monkeypatch.setenv("MEMSVC_LLM__API_KEY", "sk-not-for-the-log")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "llm: " in result.stderr and "(got fields api_key, kind)" in result.stderr
    assert "sk-not-for-the-log" not in result.stderr
