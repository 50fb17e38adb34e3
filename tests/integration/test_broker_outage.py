"""A job submitted while the broker is down is stored, answered 202, and sent once it is back."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import redis

from service.db import session_scope
from service.devstack import RedisServer
from service.models import Job
from tests.helpers import tiny_spec, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
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
        wait_for(lambda: redis.Redis(port=port).llen("cpu") == 1, 30,
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
