"""A trial's end advances its sweep through a Celery task of its own (worker.advance_sweep),
sent to the queue the trial ran on, not by running the Optuna scheduler in the training
child; a broker that is down is logged and left to the API's background round."""

from __future__ import annotations

import dataclasses

import pytest

from service import worker_api
from service.config import Settings
from service.sweeps import scheduler
from service.worker_api import Claim, Fence, JobStatus
from worker.recording.sender import ADVANCE_SWEEP_TASK, WorkerSender


@pytest.fixture()
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture()
def sent(monkeypatch):
    """What the worker's Celery app was asked to send; the scheduler must not run here."""
    from worker.celery_app import app

    out = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: out.append((name, kw)))

    def no_scheduler(*a, **kw):
        raise AssertionError("the scheduler ran in the training process")

    monkeypatch.setattr(scheduler, "advance", no_scheduler)
    return out


def test_the_sender_sends_advance_sweep_to_the_trials_queue(settings, sent):
    assert WorkerSender(settings).advance_sweep("sw1", "gpu")
    assert sent == [(ADVANCE_SWEEP_TASK, {"args": ["sw1"], "queue": "gpu", "retry": True,
                                          "retry_policy": sent[0][1]["retry_policy"]})]
    assert ADVANCE_SWEEP_TASK == "worker.advance_sweep"


def test_a_broker_that_is_down_is_logged_not_raised(settings, monkeypatch, caplog):
    from worker.celery_app import app

    def down(*a, **kw):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(app, "send_task", down)
    assert not WorkerSender(settings).advance_sweep("sw1", None)
    assert "worker.advance_sweep(sw1)" in caplog.text


def test_the_task_advances_with_the_workers_sender(monkeypatch):
    from worker import tasks

    calls = []
    monkeypatch.setattr(worker_api, "advance_sweep",
                        lambda st, sweep_id, sender: calls.append((sweep_id, sender)) or True)
    assert tasks.advance_sweep.run("sw1") is True
    assert calls[0][0] == "sw1" and isinstance(calls[0][1], WorkerSender)
    assert tasks.advance_sweep.name == "worker.advance_sweep"


def test_advancing_that_fails_is_logged_for_the_background_round(settings, monkeypatch,
                                                                    caplog):
    def broken(*a, **kw):
        raise RuntimeError("lost the database")

    monkeypatch.setattr(scheduler, "advance", broken)
    assert worker_api.advance_sweep(settings, "sw1", WorkerSender(settings)) is False
    assert "the background round will" in caplog.text


def _trial_run(settings, monkeypatch, end: str):
    """A JobRun of a sweep trial whose training and final writes are stand-ins."""
    from worker.jobs import run as run_mod
    from worker.recording import reporter

    for cls, names in ((reporter.Heartbeat, ("start", "stop")),
                       (reporter.Reporter, ("start", "close"))):
        for name in names:
            monkeypatch.setattr(cls, name, lambda self: None)
    ctx = dataclasses.make_dataclass("Ctx", ["sweep_id", "shared"])("sw1", [])
    monkeypatch.setattr(worker_api, "trial_context", lambda st, claim: ctx)
    monkeypatch.setattr(run_mod.JobRun, "_train",
                        lambda self: run_mod.Outcome(JobStatus.succeeded, {}))
    monkeypatch.setattr(run_mod.JobRun, "_end", lambda self, outcome: end)
    claim = Claim(Fence("j1", 1), "trial", {}, "sw1", queue="gpu")
    return run_mod.JobRun(settings, claim)


def test_the_end_of_a_trial_sends_advance_sweep_instead_of_running_the_scheduler(
        settings, monkeypatch, sent):
    assert _trial_run(settings, monkeypatch, "succeeded").run() == "succeeded"
    assert [(name, kw["args"], kw["queue"]) for name, kw in sent] == \
        [("worker.advance_sweep", ["sw1"], "gpu")]


def test_a_superseded_trial_leaves_the_sweep_to_the_new_owner(settings, monkeypatch, sent):
    assert _trial_run(settings, monkeypatch, "superseded").run() == "superseded"
    assert sent == []
