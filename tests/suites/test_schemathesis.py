"""schemathesis over the OpenAPI, in process: no server error, every response conforms to the schema.

Bounded in CI (`MEMSVC_SUITE_EXAMPLES`, default 8 per operation); `make fuzz` runs 200.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from api.app import create_app
from api.auth import create_key
from memsvc.memory_os import MemoryOS
from storage.registry import build_memory_os
from tests.api.conftest import make_settings
from tests.suites.common import report, size

EXAMPLES = size("examples", 8)
_state: dict[str, object] = {}


@pytest.fixture(scope="module")
def memory_os(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryOS]:
    os_ = build_memory_os(make_settings(Path(tmp_path_factory.mktemp("fuzz"))), start=False)
    _state["key"] = create_key(os_.records, "fuzz")[1]
    yield os_
    os_.close()


@pytest.fixture(scope="module")
def app(memory_os: MemoryOS) -> object:
    return create_app(memory_os=memory_os)


def _fuzz(spec: Any, name: str, headers: dict[str, str] | None = None) -> None:
    """Every operation of `spec`, EXAMPLES cases each: no server error, every response as documented."""
    seen: Counter[str] = Counter()
    failures: dict[str, str] = {}
    for result in spec.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            seen[f"{case.method} {case.path} {response.status_code}"] += 1
            case.validate_response(response, checks=(not_a_server_error, response_schema_conformance,
                                                     status_code_conformance))

        try:
            run()
        except Exception as exc:  # collected: every operation is fuzzed before the verdict
            failures[f"{op.method.upper()} {op.path}"] = str(exc)[:500]
    server_errors = {k: v for k, v in seen.items() if k.rsplit(" ", 1)[1].startswith("5")}
    report(name, {"examples_per_operation": EXAMPLES, "cases": sum(seen.values()),
                  "server_errors": server_errors, "failures": failures})
    assert server_errors == {} and failures == {}


def test_api_fuzz(app: object) -> None:
    spec = schemathesis.openapi.from_asgi("/openapi.json", app)  # type: ignore[arg-type]
    # The admin UI's HTML forms and the purge (which would empty what the other cases probe)
    # are covered by their own tests.
    spec = spec.exclude(path_regex="^/admin").exclude(method="DELETE", path="/v1/users/{user_id}")
    _fuzz(spec, "fuzz", {"Authorization": f"Bearer {_state['key']}"})


def test_gates_worker_fuzz() -> None:
    """`memsvc gates serve`'s app over the packaged heads: ragged, mis-sized or empty batches get an
    answer or a JSON error, never a 500."""
    from api.gates_server import create_gates_app
    from storage.gates.local import TorchGateModel

    _fuzz(schemathesis.openapi.from_asgi("/openapi.json", create_gates_app(TorchGateModel(device="cpu"))), "fuzz-gates")
