"""The client's models stay in step with the server: fields, required fields and enum values."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from api.app import create_app
from memsvc.config import Settings
from memsvc.models import MemoryCube, MemoryStatus, MemoryType, Role
from memsvc_client import models as cm

# client model -> the server's OpenAPI component
PAIRS: dict[type[BaseModel], str] = {
    cm.Message: "MessageIn",
    cm.WriteRequest: "WriteRequest",
    cm.Operation: "OperationIn",
    cm.TimeRange: "TimeRange",
    cm.SearchFilters: "SearchFilters",
    cm.SearchRequest: "SearchRequest",
    cm.MemoryPatch: "MemoryPatch",
    cm.FeedbackRequest: "FeedbackRequest",
    cm.Skipped: "Skipped",
    cm.WriteResult: "WriteResult",
    cm.SearchResult: "SearchResult",
    cm.ErrorDetail: "ErrorDetail",
    cm.ErrorBody: "ErrorBody",
}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    components: dict[str, Any] = app.openapi()["components"]["schemas"]
    return components


@pytest.mark.parametrize("model", list(PAIRS), ids=lambda m: m.__name__)
def test_client_model_has_the_server_fields(model: type[BaseModel], schemas: dict[str, Any]) -> None:
    server = schemas[PAIRS[model]]
    assert sorted(model.model_fields) == sorted(server["properties"])
    required = sorted(n for n, f in model.model_fields.items() if f.is_required())
    assert required == sorted(server.get("required", []))


def test_every_schema_of_the_api_has_a_client_twin(schemas: dict[str, Any]) -> None:
    objects = {n for n, s in schemas.items() if "properties" in s and "ValidationError" not in n}
    assert objects == set(PAIRS.values())
    enums = {n: sorted(s["enum"]) for n, s in schemas.items() if "enum" in s}
    assert enums == {n: sorted(typing.get_args(getattr(cm, n))) for n in ("MemoryStatus", "MemoryType", "Role")}


def test_memory_matches_the_contract_object() -> None:
    cube = MemoryCube(tenant="t", user_id="u", type=MemoryType.EPISODIC, content="x")
    assert sorted(cm.Memory.model_fields) == sorted(cube.public())
    assert sorted(set(cm.SearchHit.model_fields) - set(cm.Memory.model_fields)) == ["rank", "score", "why"]


def test_enum_values_match() -> None:
    assert set(typing.get_args(cm.MemoryType)) == {v.value for v in MemoryType}
    assert set(typing.get_args(cm.MemoryStatus)) == {v.value for v in MemoryStatus}
    assert set(typing.get_args(cm.Role)) == {v.value for v in Role}


def test_client_package_is_light() -> None:
    text = (Path(__file__).resolve().parents[2] / "clients" / "python" / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = sorted(line.strip().strip('",').split(">")[0] for line in deps.splitlines() if line.strip().startswith('"'))
    assert names == ["httpx", "pydantic"]
