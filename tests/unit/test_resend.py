"""The API's background round on the embedded stack's broker (kombu's filesystem transport, a
real folder) and an SQLite database: a queued job is sent again only when the broker holds no
message for it, and a database outage is logged once when it starts and once when it ends.

The Redis side, with a worker, is tests/integration/test_faults.py."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter

import pytest

from service.background import DatabaseOutage, dispatch_pending, run_round
from service.config import Settings
from service.jobs import submit_job
from service.queue import held_job_ids
from service.store.db import get_engine
from service.store.models import Base
from tests.helpers import tiny_spec


@pytest.fixture()
def settings(tmp_path) -> Settings:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    Base.metadata.create_all(get_engine(url))
    # resend_unclaimed_s=0: every queued job is old enough to be sent again at every round.
    return dataclasses.replace(Settings.from_env(), data_dir=tmp_path, database_url=url,
                               broker_url="filesystem://", resend_unclaimed_s=0,
                               mlflow_logging=False, api_token=None)


def messages(settings: Settings) -> Counter:
    """Job id -> train messages in the broker's folder (read here, not by the code tested)."""
    out: Counter = Counter()
    for path in (settings.broker_data_dir / "queue").glob("*.msg"):
        headers = json.loads(path.read_bytes())["headers"]
        if headers["task"] == "worker.train":
            out[headers["argsrepr"].strip("[]'")] += 1
    return out


def test_a_queued_job_is_sent_again_only_when_the_broker_lost_its_message(settings, caplog):
    ids = [submit_job(settings, tiny_spec(f"resend-{i}", epochs=1))["id"] for i in range(3)]
    assert messages(settings) == Counter({i: 1 for i in ids})
    assert held_job_ids(settings, ["cpu"]) == set(ids)
    assert held_job_ids(settings, ["gpu"]) == set()  # another queue's folder files

    caplog.set_level(logging.WARNING, logger="service.background")
    for _ in range(4):  # every round would re-send all three under the old rule
        assert dispatch_pending(settings) == 0
    assert messages(settings) == Counter({i: 1 for i in ids})
    assert "sending it again" not in caplog.text

    # The broker's data is lost: each job is sent once more, and logged, then never again.
    for path in (settings.broker_data_dir / "queue").glob("*.msg"):
        path.unlink()
    assert dispatch_pending(settings) == 3
    for _ in range(3):
        assert dispatch_pending(settings) == 0
    assert messages(settings) == Counter({i: 1 for i in ids})
    resent = [r.getMessage() for r in caplog.records if "holds no message" in r.getMessage()]
    assert len(resent) == 3 and all(any(i in m for m in resent) for i in ids), resent


def test_a_database_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
        settings, caplog):
    # Nothing listens on port 1: every connection is refused at once, a real OperationalError.
    down = dataclasses.replace(settings,
                               database_url="postgresql+psycopg://u@127.0.0.1:1/kerasyard")
    outage = DatabaseOutage()
    caplog.set_level(logging.INFO, logger="service")
    for _ in range(5):
        run_round(down, outage=outage)
    lines = [r for r in caplog.records if r.name.startswith("service")]
    assert [r.levelno for r in lines] == [logging.WARNING], [r.getMessage() for r in lines]
    assert "database unreachable" in lines[0].getMessage()
    assert lines[0].exc_info is None  # one line, no traceback
    assert outage.down_since is not None

    run_round(settings, outage=outage)  # the database answers again
    lines = [r for r in caplog.records if r.name.startswith("service")]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert "answered again after an outage of" in lines[1].getMessage()
    assert outage.down_since is None
    run_round(settings, outage=outage)
    assert len([r for r in caplog.records if r.name.startswith("service")]) == 2
