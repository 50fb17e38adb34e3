"""Real services on loopback: a fresh PostgreSQL database, a Redis db, an `mlflow server`
process and a Celery worker process (started with devstack). Session-scoped: started
once, shared by the tests."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from devstack import MlflowServer, RedisServer, StackError, WorkerProcess, worker_env
from service.config import Settings
from tests.helpers import wait_for

# Set by tests/conftest.py (tests/services.py): the machine's servers or the suite's own.
PG_ADMIN = os.environ.get("KERASYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KERASYARD_TEST_REDIS", "redis://127.0.0.1:6379/13")
NOT_REACHABLE_FIX = ("start it (scripts/ensure-services.sh starts the machine's), point the "
                     "variable at one, or let the tests bring their own: "
                     "KERASYARD_TEST_SERVICES=own")

pytestmark = pytest.mark.integration


def _create_database(name: str) -> str:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} (KERASYARD_TEST_PG; {exc}); "
                    + NOT_REACHABLE_FIX, pytrace=False)
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_database(prefix: str = "kerasyard_test"):
    """A fresh PostgreSQL database migrated to head; dropped afterwards."""
    from service.migrate import upgrade
    from service.store.db import dispose_engines

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = _create_database(name)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        _drop_database(name)


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database per test session, migrated to head."""
    with migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} (KERASYARD_TEST_REDIS; {exc}); "
                    + NOT_REACHABLE_FIX, pytrace=False)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kerasyard")


@pytest.fixture(scope="session")
def mlflow_server(workdir):
    try:
        server = MlflowServer(workdir, log_path=workdir / "mlflow.log", cwd=workdir,
                              parent_death_signal=signal.SIGTERM)
    except StackError as exc:
        pytest.fail(f"mlflow server did not start: {exc}", pytrace=False)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def settings(pg_database, redis_url, mlflow_server, workdir) -> Settings:
    return dataclasses.replace(
        Settings.from_env(), data_dir=workdir, database_url=pg_database, broker_url=redis_url,
        mlflow_tracking_uri=mlflow_server, mlflow_ui_url=mlflow_server, report_interval_s=0.1,
        api_token=None)


@pytest.fixture(scope="session")
def worker(settings, workdir):
    w = WorkerProcess(worker_env(settings), workdir / "worker.log",
                      name=f"test-{uuid.uuid4().hex[:6]}@%h", parent_death_signal=signal.SIGTERM)
    try:
        w.wait_ready()
    except StackError:
        w.stop()
        raise
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
def idle_broker(workdir):
    """A redis-server of the session's own that no worker consumes: a job sent there stays
    queued until the test acts on it, whether or not the session's worker is running."""
    try:
        server = RedisServer(workdir)
    except (OSError, StackError) as exc:
        pytest.fail(f"cannot start a redis-server of the tests' own ({exc})", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def idle_settings(settings, idle_broker) -> Settings:
    """The session's settings (same database, MLflow server) with the idle broker."""
    return dataclasses.replace(settings, broker_url=idle_broker.url)


@pytest.fixture(scope="session")
def idle_app(idle_settings):
    from service.api import create_app

    return create_app(idle_settings)


@pytest.fixture()
def idle_client(idle_app):
    """A test client whose jobs no worker takes: a submitted job stays queued."""
    return idle_app.test_client()


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



def store_job(settings: Settings, spec: dict, queue: str) -> str:
    """A job row on a queue of the test's own (only that test's workers listen there),
    stored as POST /jobs would store it, but not sent."""
    from service.jobspec import validate_job
    from service.store.db import session_scope
    from service.store.models import Job

    parsed, plan = validate_job(spec)
    with session_scope(settings.database_url) as s:
        job = Job(name=parsed.name, experiment=parsed.experiment,
                  spec=parsed.model_dump(mode="json"), plan=plan.as_dict(), queue=queue)
        s.add(job)
    return job.id
