"""Settings read from the environment: a kinded section's field can be set without naming its kind."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from memsvc.config import LocalEmbedder, LocalGates, RemoteGates, Settings, SqliteRecords


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets: none of the caller's MEMSVC_* settings."""
    for name in [n for n in os.environ if n.startswith("MEMSVC_")]:
        monkeypatch.delenv(name)


def test_a_field_of_the_default_kind_needs_no_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    # as the README documents them: one variable each, no MEMSVC_*__KIND beside it
    monkeypatch.setenv("MEMSVC_GATES__DEVICE", "cuda")
    monkeypatch.setenv("MEMSVC_EMBEDDER__PRECISION", "fp32")
    monkeypatch.setenv("MEMSVC_EMBEDDER__BATCH_SIZE", "8")
    monkeypatch.setenv("MEMSVC_RECORDS__PATH", "/tmp/elsewhere.db")
    s = Settings()
    assert isinstance(s.gates, LocalGates) and s.gates.device == "cuda"
    assert isinstance(s.embedder, LocalEmbedder) and (s.embedder.precision, s.embedder.batch_size) == ("fp32", 8)
    assert isinstance(s.records, SqliteRecords) and str(s.records.path) == "/tmp/elsewhere.db"
    assert s.jobs.kind == "inprocess"  # untouched sections keep their defaults


def test_a_named_kind_still_chooses_the_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSVC_GATES__KIND", "remote")
    monkeypatch.setenv("MEMSVC_GATES__URL", "http://127.0.0.1:8090")
    s = Settings()
    assert isinstance(s.gates, RemoteGates) and s.gates.url == "http://127.0.0.1:8090"


def test_a_field_the_default_kind_lacks_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSVC_GATES__URL", "http://127.0.0.1:8090")  # a remote gate's field, kind left local
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "gates.local.url" in str(err.value) and "Extra inputs are not permitted" in str(err.value)
    with pytest.raises(ValidationError):
        Settings(gates={"kind": "gpu"})  # an unknown kind is refused as before
