"""The examples run as a user would run them, against the live server; the config files are valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from memsvc.config import OpenAILLM, Settings
from tests.clients.conftest import Live

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(live: Live, script: str, user: str) -> str:
    env = {**os.environ, "MEMSVC_URL": live.url, "MEMSVC_API_KEY": live.key_a}
    out = subprocess.run([sys.executable, str(EXAMPLES / script), user], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_async_sdk_example(live: Live) -> None:
    lines = run(live, "async_sdk.py", "ex-async").splitlines()
    assert lines[0].startswith("recall: ") and "Berlin" in lines[0] and "['a1']" in lines[0]
    assert lines[1] == "corrected to version 2; history: ['create', 'update']"
    assert lines[2].startswith("background write ")
    assert lines[3] == "after purge: not_found"


def test_langgraph_agent_example(live: Live) -> None:
    out = run(live, "langgraph_agent.py", "ex-graph").splitlines()
    assert out[-2].startswith("agent: (what I remember: I live in Lisbon and I teach chemistry.")
    assert out[-1].startswith("retriever: [")


def test_mcp_configs_run_memsvc() -> None:
    desktop = json.loads((EXAMPLES / "mcp" / "claude_desktop_config.json").read_text())["mcpServers"]["memsvc"]
    assert desktop["command"] == "memsvc" and desktop["args"][0] == "mcp" and "MEMSVC_API_KEY" in desktop["env"]
    http = json.loads((EXAMPLES / "mcp" / "streamable_http_config.json").read_text())["mcpServers"]["memsvc"]
    assert http["url"].endswith("/mcp") and http["headers"]["Authorization"].startswith("Bearer ")


def test_local_llm_env_is_valid_configuration() -> None:
    env = {}
    for line in (EXAMPLES / "local_llm.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        llm = Settings().llm
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert isinstance(llm, OpenAILLM)
    assert (llm.base_url, llm.model, llm.timeout_s) == ("http://127.0.0.1:8081/v1", "qwen2.5-7b-instruct", 120.0)
