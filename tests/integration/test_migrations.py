"""Alembic on PostgreSQL: one head, and the migrated schema is exactly the models'."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from service.migrate import alembic_config
from service.store.models import Base

pytestmark = pytest.mark.integration


def test_single_head(pg_database):
    heads = ScriptDirectory.from_config(alembic_config(pg_database)).get_heads()
    assert len(heads) == 1, heads


def _context(conn) -> MigrationContext:
    from service.migrate import VERSION_TABLE, include_name

    return MigrationContext.configure(conn, opts={"compare_type": True,
                                                  "include_name": include_name,
                                                  "version_table": VERSION_TABLE})


def test_migrated_schema_matches_models(pg_database):
    engine = create_engine(pg_database)
    with engine.connect() as conn:
        ctx = _context(conn)
        diff = compare_metadata(ctx, Base.metadata)
        head = ScriptDirectory.from_config(alembic_config(pg_database)).get_current_head()
        assert ctx.get_current_revision() == head
    engine.dispose()
    assert diff == [], diff


def test_downgrade_and_upgrade_round_trip():
    import uuid

    from alembic import command

    from .conftest import _create_database, _drop_database

    name = f"kerasyard_mig_{uuid.uuid4().hex[:8]}"
    url = _create_database(name)
    try:
        cfg = alembic_config(url)
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")
    finally:
        from service.store.db import dispose_engines

        dispose_engines()
        _drop_database(name)


def test_optuna_tables_sit_beside_ours_with_their_own_version_table(pg_database):
    """Optuna's RDB storage (sweep state) shares the database; each history has its table."""
    import optuna
    from sqlalchemy import inspect, text

    engine = create_engine(pg_database)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        ours = conn.execute(text("SELECT version_num FROM kerasyard_alembic_version")).scalar()
        theirs = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert {"jobs", "sweeps", "studies", "trials", "trial_intermediate_values"} <= tables
    assert ours == ScriptDirectory.from_config(alembic_config(pg_database)).get_current_head()
    storage = optuna.storages.RDBStorage(pg_database)  # checks its schema version
    assert theirs == storage.get_head_version()
    storage.engine.dispose()


def test_a_database_from_before_sweeps_is_adopted():
    """Databases migrated before sweeps kept kerasyard's revision in ``alembic_version``; the
    upgrade moves it to ``kerasyard_alembic_version`` and Optuna gets the old name."""
    import uuid

    from alembic import command
    from sqlalchemy import inspect, text

    from service.migrate import upgrade

    from .conftest import _create_database, _drop_database

    name = f"kerasyard_mig_{uuid.uuid4().hex[:8]}"
    url = _create_database(name)
    try:
        command.upgrade(alembic_config(url), "0001")
        engine = create_engine(url)
        with engine.begin() as conn:  # what a 0001-era database looked like
            conn.execute(text("ALTER TABLE kerasyard_alembic_version RENAME TO alembic_version"))
            conn.execute(text("ALTER TABLE alembic_version RENAME CONSTRAINT "
                              "kerasyard_alembic_version_pkc TO alembic_version_pkc"))
        upgrade(url)
        with engine.connect() as conn:
            ours = conn.execute(text("SELECT version_num FROM kerasyard_alembic_version")
                                ).scalar()
            assert "sweeps" in inspect(conn).get_table_names()
            from alembic.script import ScriptDirectory

            assert ours == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        engine.dispose()
    finally:
        from service.store.db import dispose_engines

        dispose_engines()
        _drop_database(name)
