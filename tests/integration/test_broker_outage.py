"""A job submitted while the broker is down is stored, answered 202, and sent once it is back."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest
import redis

from service.db import session_scope
from service.models import Job
from tests.helpers import free_port, tiny_spec, wait_for

pytestmark = pytest.mark.integration


class OwnRedis:
    """A Redis of the test's own on another port, to kill and restart."""

    def __init__(self, port: int, workdir):
        self.port, self.workdir = port, workdir

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                        "--daemonize", "yes", "--save", "", "--appendonly", "no",
                        "--dir", str(self.workdir), "--pidfile",
                        str(self.workdir / f"redis-{self.port}.pid")], check=True)
        wait_for(self.ping, 20, what="own redis to start")

    def ping(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=1).ping()
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        try:
            redis.Redis(port=self.port).shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        wait_for(lambda: not self.ping(), 20, what="own redis to stop")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_job_survives_a_broker_outage(settings, tmp_path):
    from service.api import create_app

    port = free_port()
    own = OwnRedis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    cfg = dataclasses.replace(settings, broker_url=url)
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
        assert client.get("/api/v1/health").status_code in (200, 503)
    finally:
        app.extensions["kerasyard.background"].stopped.set()
        own.stop()
