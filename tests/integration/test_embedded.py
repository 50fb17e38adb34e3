"""The README's run command: on its embedded default, and switched to external services."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from devstack import Process, WorkerProcess, free_port
from tests.helpers import ROOT, ended_run, lecture_spec, tiny_spec, wait_for

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
    run = Process("the run command", [sys.executable, "-m", "devstack.run", "--port", str(port),
                                      "--mlflow-port", str(mlflow_port)],
                  env=env, log_path=tmp_path / "run.log", cwd=ROOT, new_session=True)
    proc, text = run.proc, run.text
    wait_for(lambda: proc.poll() is not None or ("kerasyard API:" in text()
                                                 and WorkerProcess.ready_in(text())),
             240, 0.5, "the run command to start")
    assert proc.poll() is None, text()[-3000:]
    return proc, text


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, ...); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children in sessions of their own too), with its command
    line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found[child] = cmd
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited


def kill_leftovers(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_run_command(proc) -> None:
    tree = descendants(proc.pid)  # taken before: orphans leave the tree
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    # Every child (MLflow server, worker, their own children) went down with it.
    try:
        wait_for(lambda: not any(alive(p) for p in tree), 30, 0.2, "the children to exit")
    finally:
        leftovers = {p: cmd for p, cmd in tree.items() if alive(p)}
        kill_leftovers(leftovers)
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
        from service.store.db import dispose_engines

        dispose_engines()
        _drop_database(name)


def test_run_command_serves_trains_and_tracks(tmp_path):
    """Nothing set: SQLite, the filesystem broker and an MLflow server of its own."""
    port, mlflow_port = free_port(), free_port()
    proc, text = start_run_command(tmp_path, port, mlflow_port)
    base = f"http://127.0.0.1:{port}/api/v1"
    tree: dict[int, str] = {}
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

        # kill -9: the run command stops nothing, its children (sessions of their own) hear of
        # it from the kernel (parent_death_signal) and stop themselves, freeing their ports.
        tree = descendants(proc.pid)
        commands = " | ".join(tree.values())
        assert "celery" in commands and "mlflow" in commands, commands
        proc.kill()
        proc.wait(timeout=30)
        wait_for(lambda: not any(alive(p) for p in tree), 90, 0.2,
                 "the children of the killed run command to exit")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health", timeout=2)
    finally:
        if proc.poll() is None:
            stop_run_command(proc)
        kill_leftovers([p for p in tree if alive(p)])


ACCESS_LINE = re.compile(r'"(GET|POST) /api/v1/\S* HTTP/1\.[01]" \d{3}')


def test_run_command_is_quiet_reprints_its_urls_and_stops_on_ctrl_c(tmp_path):
    """Started in the background from a script, as `cmd &` in a shell script does: such a
    command inherits SIGINT ignored; unless it takes SIGINT back, Ctrl-C in that terminal stops
    the script and leaves the API up. Its output through a pipe (`| cat`, as `| tee` would be)
    that the same Ctrl-C ends, so its last lines hit a broken pipe. No access log lines; the
    URLs again once a job ended; Ctrl-C (SIGINT to the terminal's process group) stops every
    process it started."""
    port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL")}
    env.update(KERASYARD_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    pid_file, log_path = tmp_path / "run.pid", tmp_path / "run.log"
    with open(log_path, "wb") as log:
        # The script leads its own process group: the "terminal" that the test's Ctrl-C hits.
        script = subprocess.Popen(
            ["bash", "-c", '("$@" 2>&1 & echo $! > "$PIDFILE"; wait) | cat', "script",
             sys.executable, "-m", "devstack.run", "--port", str(port), "--mlflow-port",
             str(mlflow_port)],
            env={**env, "PIDFILE": str(pid_file)}, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    text = lambda: log_path.read_text(errors="replace")
    tree: dict[int, str] = {}
    try:
        wait_for(lambda: script.poll() is not None or ("kerasyard API:" in text()
                                                       and WorkerProcess.ready_in(text())),
                 240, 0.5, "the run command to start")
        assert script.poll() is None, text()[-3000:]
        run_pid = int(pid_file.read_text())
        assert _stat(run_pid)[3] == str(script.pid)  # in the script's process group
        base = f"http://127.0.0.1:{port}/api/v1"

        status, job = http("POST", f"{base}/jobs", tiny_spec("quiet-run", epochs=2))
        assert status == 202, job

        def finished():
            _, j = http("GET", f"{base}/jobs/{job['id']}")
            return j if j["status"] in ("succeeded", "failed", "cancelled") else None

        done = wait_for(finished, 180, 0.2, "the job")  # polls, as `kerasyard watch` does
        assert done["status"] == "succeeded", done["error"]
        ended = f"job 'quiet-run' ({job['id']}) succeeded: {done['mlflow']['url']}"
        wait_for(lambda: ended in text(), 30, 0.2, "the run command to say the job ended")
        after = wait_for(lambda: (t := text().split(ended, 1)[1]) and "MLflow UI:" in t and t,
                         30, 0.2, "the URLs after the job")
        assert f"kerasyard API:  {base}   (docs: {base}/docs)" in after
        assert f"MLflow UI:      http://127.0.0.1:{mlflow_port}" in after
        out = text()
        assert not ACCESS_LINE.search(out), ACCESS_LINE.search(out).group(0)
        assert "View run" not in out  # MLflow's own stdout line, logged by Celery as WARNING

        tree = descendants(run_pid)
        commands = " | ".join(tree.values())
        assert "celery" in commands and "mlflow" in commands, commands
        os.killpg(script.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        wait_for(lambda: not alive(run_pid), 90, 0.2, "the run command to exit on SIGINT")
        wait_for(lambda: not any(alive(p) for p in tree), 30, 0.2, "its children to exit")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{base}/health", timeout=2)
    finally:
        tree = tree or descendants(script.pid)  # when it failed before the Ctrl-C
        leftovers = {p: cmd for p, cmd in tree.items() if alive(p)}
        kill_leftovers(leftovers)
        try:
            os.killpg(script.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        script.wait(timeout=30)
    assert not leftovers, leftovers


def test_run_command_logs_requests_with_verbose(tmp_path, mlflow_server):
    """-v: one access line per request (the API alone: SQLite and the filesystem broker in
    tmp_path, the session's MLflow server, so it starts none of its own)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(MLFLOW_TRACKING_URI=mlflow_server, KERASYARD_DATA_DIR=str(tmp_path),
               PYTHONUNBUFFERED="1")
    run = Process("the run command", [sys.executable, "-m", "devstack.run", "--port",
                                      str(port), "--no-worker", "-v"],
                  env=env, log_path=tmp_path / "run.log", cwd=ROOT, new_session=True)
    try:
        wait_for(lambda: run.proc.poll() is not None or "kerasyard API:" in run.text(), 60,
                 0.2, "the run command to start")
        status, _ = http("GET", f"http://127.0.0.1:{port}/api/v1/jobs?limit=1")
        assert status == 200
        line = wait_for(lambda: ACCESS_LINE.search(run.text()), 10, 0.1, "an access line")
        assert "GET /api/v1/jobs?limit=1" in line.group(0)
    finally:
        run.proc.send_signal(signal.SIGINT)
        run.proc.wait(timeout=30)
        run.stop()
