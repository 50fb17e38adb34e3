"""Claiming a job by id on PostgreSQL: duplicates dropped, dead owners taken over, retries capped.

These call the worker's claim() directly (no Celery); the crash path through a real worker
process is in test_training.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from service.jobspec import validate_job
from service.store.db import session_scope
from service.store.models import Job, JobEpoch, utcnow
from tests.helpers import tiny_spec
from worker.jobs.claim import claim

pytestmark = pytest.mark.integration


@pytest.fixture()
def cfg(settings):
    return dataclasses.replace(settings, mlflow_logging=False)


def make_job(cfg, **fields) -> str:
    spec = tiny_spec("claim")
    _, plan = validate_job(spec)
    with session_scope(cfg.database_url) as s:
        job = Job(name="claim", experiment="tests", spec=spec, plan=plan.as_dict(), **fields)
        s.add(job)
    return job.id


def row(cfg, job_id) -> Job:
    with session_scope(cfg.database_url) as s:
        return s.get(Job, job_id)


def test_queued_job_is_claimed_once(cfg):
    job_id = make_job(cfg)
    snap = claim(job_id, cfg)
    assert snap.fence.job_id == job_id and snap.fence.attempt == 1
    assert row(cfg, job_id).status == "running"
    # A second delivery while a live process on this host trains it is dropped.
    import socket
    import subprocess

    owner = subprocess.Popen(["sleep", "30"])
    try:
        with session_scope(cfg.database_url) as s:
            s.get(Job, job_id).worker = f"{socket.gethostname()}:{owner.pid}"
        assert claim(job_id, cfg) is None
        assert row(cfg, job_id).attempts == 1
    finally:
        owner.kill()
        owner.wait()


def test_live_pid_with_a_stale_heartbeat_is_taken_over(cfg):
    """After a container restart the hostname is the same and the old pid may now be another
    process: a live pid whose heartbeat went stale does not own the job."""
    import socket
    import subprocess

    old = utcnow() - dt.timedelta(seconds=cfg.stale_heartbeat_s + 5)
    other = subprocess.Popen(["sleep", "30"])
    try:
        job_id = make_job(cfg, status="running", attempts=1,
                          worker=f"{socket.gethostname()}:{other.pid}", heartbeat_at=old)
        snap = claim(job_id, cfg)
        assert snap is not None and snap.fence.attempt == 2
    finally:
        other.kill()
        other.wait()


def test_fresh_owner_on_another_host_keeps_the_job(cfg):
    job_id = make_job(cfg, status="running", attempts=1, worker="other-host:123",
                      heartbeat_at=utcnow())
    assert claim(job_id, cfg) is None
    assert row(cfg, job_id).attempts == 1


def test_stale_owner_is_taken_over_and_old_epochs_dropped(cfg):
    old = utcnow() - dt.timedelta(seconds=cfg.stale_heartbeat_s + 5)
    job_id = make_job(cfg, status="running", attempts=1, worker="other-host:123",
                      heartbeat_at=old)
    with session_scope(cfg.database_url) as s:
        s.add(JobEpoch(job_id=job_id, epoch=1, metrics={"loss": 1.0}))
    snap = claim(job_id, cfg)
    assert snap is not None and snap.fence.attempt == 2
    with session_scope(cfg.database_url) as s:
        assert s.get(JobEpoch, (job_id, 1)) is None


def test_dead_pid_on_this_host_is_taken_over_at_once(cfg):
    import socket
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs
    job_id = make_job(cfg, status="running", attempts=1,
                      worker=f"{socket.gethostname()}:{proc.pid}", heartbeat_at=utcnow())
    assert claim(job_id, cfg).fence.attempt == 2


def test_retries_are_capped(cfg):
    old = utcnow() - dt.timedelta(seconds=cfg.stale_heartbeat_s + 5)
    job_id = make_job(cfg, status="running", attempts=cfg.max_attempts, worker="h:1",
                      heartbeat_at=old)
    assert claim(job_id, cfg) is None
    job = row(cfg, job_id)
    assert job.status == "failed" and job.error["type"] == "WorkerLost"
    assert f"died {cfg.max_attempts} times" in job.error["message"]


def test_terminal_and_cancelled_jobs_are_dropped(cfg):
    done = make_job(cfg, status="succeeded")
    assert claim(done, cfg) is None and row(cfg, done).status == "succeeded"
    cancelled = make_job(cfg, cancel_requested=True)
    assert claim(cancelled, cfg) is None and row(cfg, cancelled).status == "cancelled"
    assert claim("no-such-job", cfg) is None


def test_job_cancelled_while_its_worker_was_dead_is_not_restarted(cfg):
    old = utcnow() - dt.timedelta(seconds=cfg.stale_heartbeat_s + 5)
    job_id = make_job(cfg, status="running", attempts=1, worker="other-host:9",
                      heartbeat_at=old, cancel_requested=True)
    assert claim(job_id, cfg) is None
    assert row(cfg, job_id).status == "cancelled"


def test_api_resends_a_running_job_whose_worker_went_silent(cfg, idle_broker):
    """A dead worker host: its heartbeat stops; the re-dispatcher sends the id again."""
    import redis

    from service.background import dispatch_pending

    # The tests' own redis-server, which no worker consumes (and flushing it touches no one
    # else's Redis db): what was sent is still on the queue when the test reads it.
    cfg = dataclasses.replace(cfg, broker_url=idle_broker.url)
    r = redis.Redis.from_url(cfg.broker_url)
    r.flushdb()
    old = utcnow() - dt.timedelta(seconds=cfg.stale_heartbeat_s + 5)
    orphan = make_job(cfg, status="running", attempts=1, worker="gone:1", heartbeat_at=old,
                      dispatched_at=old)
    alive = make_job(cfg, status="running", attempts=1, worker="busy:1", heartbeat_at=utcnow(),
                     dispatched_at=old)
    assert dispatch_pending(cfg) >= 1
    sent = [json.loads(m)["headers"]["argsrepr"] for m in r.lrange("cpu", 0, -1)]
    assert any(orphan in a for a in sent) and not any(alive in a for a in sent)
    r.flushdb()
    assert claim(orphan, cfg).fence.attempt == 2  # what the worker receiving it does


def test_a_final_write_whose_answer_was_lost_is_known_by_its_attempt(cfg):
    """lifecycle.finished_by: the worker asks it when finish() answered SUPERSEDED on a retry
    after a try that failed (its commit may have landed with the answer lost): true only for
    this attempt and the status it wrote."""
    from service import lifecycle
    from service.store.models import JobStatus

    job_id = make_job(cfg)
    fence = claim(job_id, cfg).fence
    assert not lifecycle.finished_by(cfg, fence, JobStatus.succeeded)  # still running
    assert lifecycle.finish(cfg, fence, JobStatus.succeeded) is lifecycle.Ownership.OWNED
    # The retry of that write: the fence no longer holds, as after any other owner's write.
    assert lifecycle.finish(cfg, fence, JobStatus.succeeded) is lifecycle.Ownership.SUPERSEDED
    assert lifecycle.finished_by(cfg, fence, JobStatus.succeeded)
    assert not lifecycle.finished_by(cfg, fence, JobStatus.failed)
    other = dataclasses.replace(fence, attempt=fence.attempt + 1)
    assert not lifecycle.finished_by(cfg, other, JobStatus.succeeded)
