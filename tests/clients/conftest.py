"""One real `memsvc serve` on loopback for the whole clients test session (keys made in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.auth import create_key
from memsvc.config import Settings
from storage.registry import RECORDS
from tests.api.test_live_server import server
from tests.conftest import free_port


@dataclass(frozen=True)
class Live:
    url: str
    data_dir: Path
    key_a: str       # tenant A
    key_b: str       # tenant B
    key_a_ro: str    # tenant A, read-only


def _keys(data_dir: Path) -> tuple[str, str, str]:
    settings = Settings(data_dir=data_dir)
    records = RECORDS[settings.records.kind](settings.records, settings)
    records.migrate()
    try:
        return (create_key(records, "tenant-a")[1], create_key(records, "tenant-b")[1],
                create_key(records, "tenant-a", read_only=True)[1])
    finally:
        records.close()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("live-data")
    with server(data_dir, free_port()) as url:
        a, b, ro = _keys(data_dir)
        yield Live(url=url, data_dir=data_dir, key_a=a, key_b=b, key_a_ro=ro)
