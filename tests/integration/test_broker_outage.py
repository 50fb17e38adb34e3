"""A job submitted while the broker is down is stored, answered 202, and sent once it is back."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from devstack import RedisServer
from service.store.db import session_scope
from service.store.models import Job
from tests.helpers import tiny_spec, wait_for

pytestmark = pytest.mark.integration


def test_job_survives_a_broker_outage(settings, tmp_path):
    from service.api import create_app

    own = RedisServer(tmp_path, start=False)  # a Redis of the test's own, to kill and restart
    port = own.port
    cfg = dataclasses.replace(settings, broker_url=own.url)
    app = create_app(cfg, redispatch_interval=0.5)
    client = app.test_client()
    try:
        own.start()
        own.stop()
        health = client.get("/api/v1/health")
        assert health.status_code == 503
        assert health.get_json()["components"]["broker"]["ok"] is False

        resp = client.post("/api/v1/jobs", json=tiny_spec("during-outage", epochs=1))
        assert resp.status_code == 202, resp.get_json()
        job_id = resp.get_json()["id"]
        assert resp.get_json()["dispatched_at"] is None  # stored, waiting for the broker
        with session_scope(cfg.database_url) as s:
            job = s.get(Job, job_id)
            assert job.status == "queued" and job.dispatched_at is None

        own.start()
        # The API's re-dispatcher sends it once the broker answers; the id is on the queue.
        # (Other tests' jobs that were never sent may go there too: the re-dispatcher sends
        # every stored job that waits for a broker, so look for this one's id.)
        wait_for(lambda: any(job_id.encode() in m
                             for m in redis.Redis(port=port).lrange("cpu", 0, -1)), 30,
                 what="the job id to reach the restarted broker")
        with session_scope(cfg.database_url) as s:
            assert s.get(Job, job_id).dispatched_at is not None
        # Database, broker and MLflow all up again: healthy (each check opens a fresh
        # connection, none is left over from the outage).
        health = client.get("/api/v1/health")
        assert health.status_code == 200, health.get_json()
    finally:
        app.extensions["kerasyard.background"].stopped.set()
        own.stop()


def test_a_hung_broker_does_not_hang_submissions(settings, tmp_path):
    """A broker that accepts connections and then answers nothing (SIGSTOP): the sender's
    socket timeouts let POST /jobs answer 202 with the job stored, and the background round
    sends it once the broker answers again."""
    import os
    import signal
    import threading

    from service.api import create_app
    from service.background import dispatch_pending

    own = RedisServer(tmp_path)
    cfg = dataclasses.replace(settings, broker_url=own.url)
    app = create_app(cfg)
    client = app.test_client()
    try:
        os.kill(own.proc.pid, signal.SIGSTOP)
        answers = []
        post = threading.Thread(target=lambda: answers.append(client.post(
            "/api/v1/jobs", json=tiny_spec("hung-broker", epochs=1))), daemon=True)
        post.start()
        # A generous bound: the point is that it answers at all (without socket timeouts
        # kombu waits on a hung broker for ever).
        post.join(120)
        assert answers, "POST /jobs hung on a broker that answers nothing"
        resp = answers[0]
        assert resp.status_code == 202, resp.get_json()
        assert resp.get_json()["dispatched_at"] is None
        os.kill(own.proc.pid, signal.SIGCONT)
        job_id = resp.get_json()["id"]
        wait_for(lambda: dispatch_pending(cfg) >= 1, 60, 1, "the stored job to be sent")
        # Exactly one message for this job. (The app's background round may also send
        # other tests' stored, unclaimed jobs to this fresh broker, which holds no message
        # for them: that is its job, so count this job's messages only.)
        queued = redis.Redis(port=own.port).lrange("cpu", 0, -1)
        assert sum(job_id.encode() in m for m in queued) == 1, queued
    finally:
        os.kill(own.proc.pid, signal.SIGCONT)
        own.stop()
