"""`alembic upgrade head` as a function (used by the run command, the tests and compose)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
# Optuna's storage keeps its own Alembic history in ``alembic_version``; kerasyard's is here.
VERSION_TABLE = "kerasyard_alembic_version"


def include_name(name, type_, parent_names) -> bool:
    """Only kerasyard's tables: Optuna's share the database, and autogenerate must not offer
    to drop them."""
    from .models import Base

    return type_ != "table" or name in Base.metadata.tables or name == VERSION_TABLE


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """kerasyard's tables to ``revision``, then Optuna's (sweep state) to its head."""
    command.upgrade(alembic_config(database_url), revision)
    if revision == "head":
        from .sweeps.studies import init_storage

        init_storage(database_url)


if __name__ == "__main__":
    from .config import get_settings

    upgrade(sys.argv[1] if len(sys.argv) > 1 else get_settings().database_url)
    print("database at head")
