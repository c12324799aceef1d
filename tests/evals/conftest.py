from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root(shared_data: Path) -> Path:
    """../shared/data ($MEMSVC_DATA); the tests that use it skip when it is absent."""
    return shared_data
