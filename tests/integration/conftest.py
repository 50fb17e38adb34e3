"""Real services on loopback: a fresh PostgreSQL database, a Redis db, an `mlflow server`
process and a Celery worker process. Session-scoped: started once, shared by the tests."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from service.config import Settings
from service.run import mlflow_server_cmd, mlflow_server_env, wait_http, worker_cmd
from tests.helpers import ROOT, free_port, wait_for

PG_ADMIN = os.environ.get("KERASYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KERASYARD_TEST_REDIS", "redis://127.0.0.1:6379/13")

pytestmark = pytest.mark.integration


def _create_database(name: str) -> str:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); start it with "
                    "scripts/ensure-services.sh", pytrace=False)
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database per test session, migrated to head."""
    from service.migrate import upgrade

    name = f"kerasyard_test_{uuid.uuid4().hex[:8]}"
    url = _create_database(name)
    upgrade(url)
    yield url
    from service.db import dispose_engines

    dispose_engines()
    _drop_database(name)


@pytest.fixture(scope="session")
def redis_url():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it with "
                    "scripts/ensure-services.sh", pytrace=False)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kerasyard")


@pytest.fixture(scope="session")
def mlflow_server(workdir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "mlflow.log", "wb")
    proc = subprocess.Popen(
        mlflow_server_cmd("127.0.0.1", port, f"sqlite:///{workdir / 'mlflow.db'}",
                          str(workdir / "mlartifacts")),
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=mlflow_server_env())
    try:
        wait_http(f"{url}/health", 180, proc)
    except SystemExit as exc:
        proc.kill()
        pytest.fail(f"mlflow server did not start: {exc}\n"
                    f"{(workdir / 'mlflow.log').read_text()[-3000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def settings(pg_database, redis_url, mlflow_server, workdir) -> Settings:
    return dataclasses.replace(
        Settings.from_env(), data_dir=workdir, database_url=pg_database, broker_url=redis_url,
        mlflow_tracking_uri=mlflow_server, mlflow_ui_url=mlflow_server, report_interval_s=0.1,
        api_token=None)


def worker_env(settings: Settings, **extra) -> dict:
    env = os.environ.copy()
    env.update({
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": settings.broker_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "KERASYARD_DATA_DIR": str(settings.data_dir),
        "KERASYARD_REPORT_INTERVAL_S": str(settings.report_interval_s),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, env: dict, log_path: Path, queues: str = "cpu,gpu"):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(worker_cmd(queues=queues, name=f"test-{uuid.uuid4().hex[:6]}@%h"),
                                     env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.text()[-4000:]}")
            return "ready with Keras backend" in self.text()

        wait_for(ready, timeout, 0.5, "the Celery worker child to import Keras")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def worker(settings, workdir):
    w = WorkerProcess(worker_env(settings), workdir / "worker.log")
    w.wait_ready()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def app(settings):
    from service.api import create_app

    return create_app(settings)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def mlflow_client(mlflow_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server)


def wait_terminal(client, job_id: str, timeout: float = 180) -> dict:
    def done():
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        return job if job["status"] in ("succeeded", "failed", "cancelled", "pruned") else None

    return wait_for(done, timeout, 0.2, f"job {job_id} to finish")


def queue_length(redis_url: str, queue: str = "cpu") -> int:
    return redis.Redis.from_url(redis_url).llen(queue)

