"""Alembic environment: imports only the models' metadata; URL from service.config.

kerasyard keeps its revision in ``kerasyard_alembic_version``: Optuna's RDB storage (sweep
state, in the same database) runs its own Alembic history in the default ``alembic_version``
table, and two histories cannot share one version table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import inspect, text

from service.config import get_settings
from service.migrate import VERSION_TABLE, include_name
from service.store.db import make_engine
from service.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def _adopt_legacy_version_table(conn) -> None:
    """Databases made before sweeps kept kerasyard's revision in ``alembic_version``: move it."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables or "alembic_version" not in tables:
        return
    ours = {s.revision for s in context.script.walk_revisions()}
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    if row is None or row[0] not in ours:
        return  # empty, or Optuna's
    conn.execute(text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
                      f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"))
    conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": row[0]})
    conn.execute(text("DROP TABLE alembic_version"))


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, render_as_batch=True,
                      version_table=VERSION_TABLE, include_name=include_name, **kwargs)


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(conn) -> None:
    _configure(connection=conn)
    with context.begin_transaction():
        _adopt_legacy_version_table(conn)
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
