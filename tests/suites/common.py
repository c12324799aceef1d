"""Shared by the suites: a real `memsvc serve` process, suite sizes, and a JSON report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

MEMSVC = [sys.executable, "-m", "api.cli"]
REPO = Path(__file__).resolve().parents[2]


def size(name: str, bounded: int) -> int:
    """A suite's size: the bounded CI value, or `MEMSVC_SUITE_<NAME>` (the make targets set it)."""
    return int(os.environ.get(f"MEMSVC_SUITE_{name.upper()}", bounded))


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures and, with `MEMSVC_SUITE_OUT`, write them as JSON there."""
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    out = os.environ.get("MEMSVC_SUITE_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))


class Server:
    """`memsvc serve` on loopback, started and killed (SIGKILL) or stopped (SIGTERM) at will."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port = data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "MEMSVC_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{port}.log"

    def start(self, timeout_s: float = 180) -> float:
        """Start and wait until /readyz answers; seconds it took."""
        began = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*MEMSVC, "serve", "--port", str(self.port)], cwd=REPO, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - began < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> float:
        """SIGTERM; seconds until the process exited."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        return time.monotonic() - began

    def key(self, tenant: str) -> str:
        out = subprocess.run([*MEMSVC, "keys", "create", "--tenant", tenant, "--data-dir", str(self.data_dir)],
                             cwd=REPO, env=self.env, check=True, capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]
