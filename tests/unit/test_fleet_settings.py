"""What a fleet of trainings asks of one PostgreSQL: the progress writes' pace
(worker/recording/pace.py) and the connections each process role keeps
(service/store/db.py). bench/fleet.py measures the whole; docs/fleet.md has its figures."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import NullPool, QueuePool

from service.store import db
from worker.recording.pace import Pace

PG = "postgresql+psycopg://u:p@127.0.0.1:5432/k"


def test_the_pace_starts_often_and_backs_off_by_half_to_the_bound():
    pace = Pace(0.25, 4.0)
    assert pace.schedule(9) == [0.25, 0.375, 0.5625, 0.84375, 1.265625, 1.8984375,
                                2.84765625, 4.0, 4.0]
    # The first 10 s of a training: 9 writes where a fixed 0.25 s interval made 40.
    assert sum(pace.schedule(8)[:-1]) < 10 < sum(pace.schedule(9))


def test_a_slow_write_stretches_the_next_interval_but_never_past_the_bound():
    pace = Pace(0.25, 4.0, duty=0.05)
    assert pace.wrote(0.05) == 1.0  # 0.05 s of writing may fill 5 % of the clock
    assert pace.wrote(0.0) == pytest.approx(0.5625)
    assert pace.wrote(10.0) == 4.0


def test_a_bound_below_the_start_is_the_start():
    pace = Pace(2.0, 1.0)
    assert pace.schedule(3) == [2.0, 2.0, 2.0]


@pytest.fixture()
def restore_pool():
    before = db.pool_role()
    yield
    db.set_pool(before)


def test_each_role_keeps_its_own_connections(restore_pool):
    assert db.pool_role() == "service"
    engine = db.make_engine(PG)
    assert isinstance(engine.pool, QueuePool) and engine.pool.size() == 5
    assert engine.pool._max_overflow == 5

    db.set_pool("training")
    engine = db.make_engine(PG)
    assert engine.pool.size() == 1 and engine.pool._max_overflow == 1

    db.set_pool("per-write")
    assert isinstance(db.make_engine(PG).pool, NullPool)


def test_sqlite_keeps_its_pool_whatever_the_role(restore_pool):
    db.set_pool("per-write")
    assert not isinstance(db.make_engine("sqlite:///:memory:").pool, NullPool)


def test_psycopg_prepares_nothing_so_a_transaction_pooler_works():
    assert db.connect_args(PG) == {"connect_timeout": 10, "prepare_threshold": None}
    assert db.connect_args("postgresql://u@h/k") == {"connect_timeout": 10}
    assert db.connect_args("sqlite:///x.db") == {}


def test_an_unknown_pool_names_the_known_ones(restore_pool):
    with pytest.raises(ValueError, match="KERASYARD_DB_POOL.*|per-write"):
        db.set_pool("tiny")
    assert db.pool_role() == "service"


def test_set_pool_drops_the_engines_made_so_far(restore_pool):
    first = db.get_engine(PG)
    db.set_pool("training")
    assert db.get_engine(PG) is not first


def test_the_bound_stays_a_quarter_of_the_stale_heartbeat_bound():
    """The progress write is the heartbeat: its bound must keep a live training from looking
    silent, whatever stale bound an operator (or a test) sets."""
    import dataclasses

    from devstack.servers import worker_env
    from service.config import Settings

    base = Settings.from_env()
    assert base.report_bound_s == 4.0  # defaults: 4 s, stale after 120 s
    quick = dataclasses.replace(base, stale_heartbeat_s=3)
    assert quick.report_bound_s == 0.75
    assert dataclasses.replace(quick, report_interval_s=1.0).report_bound_s == 1.0
    # A worker started for an API with a short stale bound writes within it.
    assert worker_env(quick, base={})["KERASYARD_REPORT_INTERVAL_MAX_S"] == "0.75"
