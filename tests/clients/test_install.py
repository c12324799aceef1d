"""`pip install ./clients/python[langchain]` in a clean virtualenv: the client and its integrations, no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
PROBE = """
import importlib.util, json
import memsvc_client, memsvc_client.langchain, memsvc_client.langgraph
print(json.dumps({m: importlib.util.find_spec(m) is not None
                  for m in ("torch", "sentence_transformers", "memsvc", "api", "httpx", "pydantic", "langgraph")}))
"""


@pytest.mark.slow  # about 20 s with a warm pip cache; run by `make test` all the same
def test_client_installs_without_torch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing of the server's
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{CLIENT}[langchain]"],
                   check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    out = subprocess.run([str(py), "-c", PROBE], check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.stdout.strip() == (
        '{"torch": false, "sentence_transformers": false, "memsvc": false, "api": false, '
        '"httpx": true, "pydantic": true, "langgraph": true}')
