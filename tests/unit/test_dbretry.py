"""Database calls that fail on their connection are retried, others raise at once; a claim
that never reaches the database is handed back to Celery, not acked away."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import exc as sa_exc

from service.config import Settings
from worker.jobs import claim as claim_mod
from worker.recording.dbretry import is_transient, retry_db


def _settings(**kw) -> Settings:
    return dataclasses.replace(Settings.from_env(), **kw)


def _down() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_transient_errors():
    assert is_transient(_down())
    assert is_transient(sa_exc.InterfaceError("x", {}, Exception("closed")))
    assert is_transient(sa_exc.DBAPIError("x", {}, Exception("gone"),
                                          connection_invalidated=True))
    assert not is_transient(sa_exc.IntegrityError("x", {}, Exception("duplicate")))
    assert not is_transient(ValueError("bug"))


def test_retry_until_it_answers_with_backoff():
    calls, waits = [], []

    def call():
        calls.append(1)
        if len(calls) < 4:
            raise _down()
        return "ok"

    assert retry_db(_settings(), "t", call, budget_s=60, sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0, 2.0]


def test_retry_gives_up_after_its_budget_and_never_retries_other_errors():
    with pytest.raises(sa_exc.OperationalError):
        retry_db(_settings(), "t", lambda: (_ for _ in ()).throw(_down()), budget_s=0,
                 sleep=lambda s: None)
    calls = []

    def bug():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        retry_db(_settings(), "t", bug, budget_s=60, sleep=lambda s: None)
    assert calls == [1]


def test_a_claim_without_database_asks_for_a_later_delivery(monkeypatch):
    def claim(settings, job_id, worker=None):
        raise _down()

    monkeypatch.setattr(claim_mod.api, "claim", claim)
    with pytest.raises(claim_mod.ClaimUnavailable):
        claim_mod.claim("j1", _settings(db_retry_s=0.0))


def test_the_train_task_retries_instead_of_acking(monkeypatch):
    from celery.exceptions import Retry

    from worker import tasks
    from worker.jobs import run

    def run_job(job_id, settings):
        raise claim_mod.ClaimUnavailable("no database")

    monkeypatch.setattr(run, "run_job", run_job)
    sent = []
    monkeypatch.setattr(tasks.train, "retry",
                        lambda **kw: sent.append(kw) or Retry("later", when=kw["countdown"]))
    with pytest.raises(Retry):
        tasks.train.run("j1")
    assert sent and sent[0]["countdown"] == tasks.CLAIM_RETRY_COUNTDOWN_S
    assert tasks.train.max_retries is None
