"""A server's start-up takes what it loaded out of the cyclic garbage collector's walks (`settle_heap`):
a full collection then walks what requests create, not torch's and the models' objects."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_key
from tests.api.conftest import make_settings


def test_the_app_freezes_what_its_start_up_built(tmp_path: Path) -> None:
    gc.unfreeze()  # whatever an earlier test froze: the count below is this start-up's
    try:
        assert gc.get_freeze_count() == 0
        with TestClient(create_app(make_settings(tmp_path))) as client:
            assert client.get("/healthz").status_code == 200
            os_ = client.app.state.memory_os  # type: ignore[attr-defined]
            assert os_.gate is not None  # the models were loaded at start-up, and frozen with it
            assert gc.get_freeze_count() > 100_000
            tracked = gc.get_objects()  # the collector's generations, not the frozen objects
            assert all(o is not os_ and o is not os_.gate for o in tracked)
            auth = {"Authorization": f"Bearer {create_key(os_.records, 'tenant-heap')[1]}"}
            added = client.post("/v1/memories", headers=auth, json={
                "user_id": "u", "infer": False, "messages": [{"role": "user", "content": "I moved to Berlin."}]})
            assert added.status_code in (200, 201, 202), added.text
            found = client.post("/v1/memories/search", headers=auth, json={"user_id": "u", "query": "Where did I move?"})
            assert found.status_code == 200 and "Berlin" in found.text  # it serves as before
    finally:
        gc.unfreeze()
