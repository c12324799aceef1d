"""Alembic environment of the record store; configured in code (there is no alembic.ini).

New revision: `command.revision(alembic_config(url=...), message="...", autogenerate=True)`.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(*, connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic `Config` for these migrations, bound to a connection or a URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg
