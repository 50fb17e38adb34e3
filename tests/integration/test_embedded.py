"""The README's run command: on its embedded default, and switched to external services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from service.devstack import Process, WorkerProcess, free_port
from tests.helpers import ROOT, ended_run, lecture_spec, wait_for

pytestmark = pytest.mark.integration


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_run_command(tmp_path, port, mlflow_port, **extra_env):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL")}
    env.update(KERASYARD_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **extra_env)
    # Its own session: stop_run_command signals the run command alone, then looks for
    # children it left behind in that session.
    run = Process("the run command", [sys.executable, "-m", "service.run", "--port", str(port),
                                      "--mlflow-port", str(mlflow_port)],
                  env=env, log_path=tmp_path / "run.log", cwd=ROOT, new_session=True)
    proc, text = run.proc, run.text
    wait_for(lambda: proc.poll() is not None or ("kerasyard API:" in text()
                                                 and WorkerProcess.ready_in(text())),
             240, 0.5, "the run command to start")
    assert proc.poll() is None, text()[-3000:]
    return proc, text


def stop_run_command(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    # Every child (MLflow server, worker) went down with it.
    leftovers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True,
                               text=True).stdout.split()
    if leftovers:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not leftovers, leftovers


def run_lecture_job(base: str) -> dict:
    status, job = http("POST", f"{base}/jobs", lecture_spec(epochs=3))
    assert status == 202, job

    def finished():
        _, j = http("GET", f"{base}/jobs/{job['id']}")
        return j if j["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_for(finished, 180, 0.3, "the job")
    assert done["status"] == "succeeded", done["error"]
    return done


def test_run_command_uses_postgresql_redis_and_external_mlflow_when_set(tmp_path, settings,
                                                                        mlflow_client):
    """DATABASE_URL, BROKER_URL and MLFLOW_TRACKING_URI switch the same command over."""
    import redis as redis_lib

    from .conftest import REDIS_URL, _create_database, _drop_database

    name = f"kerasyard_run_{os.getpid()}"
    db_url = _create_database(name)
    broker = REDIS_URL.rsplit("/", 1)[0] + "/12"  # the suite's Redis, a database of its own
    redis_lib.Redis.from_url(broker).flushdb()
    port = free_port()
    proc, text = start_run_command(tmp_path, port, free_port(), DATABASE_URL=db_url,
                                   BROKER_URL=broker,
                                   MLFLOW_TRACKING_URI=settings.mlflow_tracking_uri)
    try:
        assert "starting MLflow server" not in text()
        base = f"http://127.0.0.1:{port}/api/v1"
        status, health = http("GET", f"{base}/health")
        assert status == 200, health
        done = run_lecture_job(base)
        assert ended_run(mlflow_client, done["mlflow"]["run_id"]).info.status == "FINISHED"
        assert not (tmp_path / "data" / "kerasyard.db").exists()
        import psycopg

        with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT status FROM jobs WHERE id = %s",
                                (done["id"],)).fetchone() == ("succeeded",)
    finally:
        stop_run_command(proc)
        from service.db import dispose_engines

        dispose_engines()
        _drop_database(name)


def test_run_command_serves_trains_and_tracks(tmp_path):
    """Nothing set: SQLite, the filesystem broker and an MLflow server of its own."""
    port, mlflow_port = free_port(), free_port()
    proc, text = start_run_command(tmp_path, port, mlflow_port)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        assert f"kerasyard API:  {base}" in text()
        assert f"MLflow UI:      http://127.0.0.1:{mlflow_port}" in text()
        status, health = http("GET", f"{base}/health")
        assert status == 200, health
        done = run_lecture_job(base)
        assert done["mlflow"]["url"].startswith(f"http://127.0.0.1:{mlflow_port}/#/experiments/")

        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{mlflow_port}")
        run = ended_run(client, done["mlflow"]["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params["total_updates"] == "120"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
        assert (tmp_path / "data" / "kerasyard.db").exists()
        assert (tmp_path / "data" / "mlflow.db").exists()

        # A sweep on SQLite (Optuna's study in the same file) and the filesystem broker.
        status, sw = http("POST", f"{base}/sweeps", {
            "name": "embedded-sweep", "base": lecture_spec(), "objective": {"metric": "loss"},
            "parameters": {"model.hidden_activation": ["relu", "tanh"], "fit.epochs": [1, 3]}})
        assert status == 202, sw

        def sweep_done():
            _, s = http("GET", f"{base}/sweeps/{sw['id']}")
            return s if (s["report"] or {}).get("state") in ("done", "failed") else None

        sw = wait_for(sweep_done, 180, 0.3, "the sweep")
        assert sw["status"] == "succeeded", sw
        assert [t["state"] for t in sw["trials"]] == ["succeeded"] * 4
        assert sw["report"]["state"] == "done", sw["report"]
        assert ended_run(client, sw["mlflow"]["run_id"]).info.status == "FINISHED"
        assert (tmp_path / "data" / "broker" / "control").is_dir()
        assert not (ROOT / "control").exists()  # kombu's default folder stays out of the repo
    finally:
        stop_run_command(proc)
