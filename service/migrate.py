"""`alembic upgrade head` as a function (used by the run command, the tests and compose)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
# Optuna's storage keeps its own Alembic history in ``alembic_version``; kerasyard's is here.
VERSION_TABLE = "kerasyard_alembic_version"


def include_name(name, type_, parent_names) -> bool:
    """Only kerasyard's tables: Optuna's share the database, and autogenerate must not offer
    to drop them."""
    from service.store.models import Base

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
        from service.sweeps.studies import init_storage

        init_storage(database_url)


def wait_for_database(database_url: str, wait_s: float, interval_s: float = 1.0,
                      out=sys.stderr) -> int:
    """Connect until the database answers ``SELECT 1``; the attempts it took.

    docker-compose starts migrate once PostgreSQL's health check passes, but a first start that
    initialises the volume, or a server still opening its TCP port, refuses connections for a
    while; migrate has ``restart: "no"`` (the API and workers wait for it to succeed), so it
    waits here instead of failing. Messages carry the URL without its password.

    Raises:
        SystemExit: still refused after ``wait_s`` seconds, with the URL and the last error.
    """
    from sqlalchemy import create_engine, text

    from service.config import redact_url

    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        attempt += 1
        engine = create_engine(database_url, pool_pre_ping=False)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return attempt
        except Exception as exc:  # OperationalError: refused, starting up, DNS not there yet
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            if time.monotonic() + interval_s > deadline:
                raise SystemExit(f"migrate: the database at {redact_url(database_url)} refused "
                                 f"connections for {wait_s:g} s (KERASYARD_MIGRATE_WAIT_S), "
                                 f"{attempt} attempts; last: {reason}") from None
            print(f"migrate: database at {redact_url(database_url)} not ready (attempt "
                  f"{attempt}): {reason}; retrying in {interval_s:g} s", file=out, flush=True)
            time.sleep(interval_s)
            interval_s = min(interval_s * 1.5, 5.0)
        finally:
            engine.dispose()


if __name__ == "__main__":
    from service.config import get_settings

    url = sys.argv[1] if len(sys.argv) > 1 else get_settings().database_url
    if not url.startswith("sqlite"):
        wait_for_database(url, get_settings().migrate_wait_s)
    upgrade(url)
    print("database at head")
