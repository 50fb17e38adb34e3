"""Alembic on PostgreSQL: one head, and the migrated schema is exactly the models'."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from service.migrate import alembic_config
from service.models import Base

pytestmark = pytest.mark.integration


def test_single_head(pg_database):
    heads = ScriptDirectory.from_config(alembic_config(pg_database)).get_heads()
    assert len(heads) == 1, heads


def test_migrated_schema_matches_models(pg_database):
    engine = create_engine(pg_database)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
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
        from service.db import dispose_engines

        dispose_engines()
        _drop_database(name)
