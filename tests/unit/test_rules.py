"""House rules as tests: public names, documented settings, layering, one error shape."""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import BaseModel

import memsvc
from memsvc.config import Settings
from memsvc.errors import MemsvcError

ROOT = Path(__file__).resolve().parents[2]


def test_public_names_are_listed_sorted_and_importable() -> None:
    assert memsvc.__all__ == sorted(memsvc.__all__)
    for name in memsvc.__all__:
        assert getattr(memsvc, name) is not None


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for field, info in model.model_fields.items():
        ann = info.annotation
        sub = getattr(ann, "__args__", None)
        candidates = [a for a in (sub or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if candidates:
            for c in candidates:
                names += _env_names(c, f"{prefix}{field.upper()}__")
        else:
            names.append(f"{prefix}{field.upper()}")
    return names


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = []
    for name in sorted(set(_env_names(Settings, "MEMSVC_"))):
        section, _, leaf = name.rpartition("__")
        # The README groups a section's fields in one row: `MEMSVC_X__A`, `__B`.
        if name not in readme and not (section and f"`{section}__" in readme and f"__{leaf}`" in readme):
            missing.append(name)
    assert missing == []


def test_memsvc_never_imports_storage_api_or_evals() -> None:
    offenders = []
    for path in (ROOT / "memsvc").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            offenders += [f"{path.name}: {m}" for m in mods if m.split(".")[0] in ("storage", "api", "evals")]
    assert offenders == []


def test_every_error_has_a_status_and_code() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for c in cls.__subclasses__() for s in subclasses(c)]

    codes = set()
    for cls in subclasses(MemsvcError):
        err = cls("x")
        assert 400 <= err.status < 600
        assert err.to_dict() == {"error": {"code": err.code, "message": "x"}}
        codes.add(err.code)
    assert len(codes) == len(subclasses(MemsvcError))
