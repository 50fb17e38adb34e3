"""Pause and resume (issue 20): a job and a sweep, through the API and the CLI, against the
session's real worker; and a worker asked to stop (SIGTERM) that hands its job to the next.

Until a resumed training goes on from its checkpoint, these assert the status transitions
(and that a paused job is never trained), not the epoch a resumed attempt starts from.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from devstack import ApiServer
from kerasyard import Client
from service import lifecycle
from service.background import dispatch_pending
from service.jobspec import validate_job
from service.queue import CelerySender
from service.store.db import session_scope
from service.store.models import Job, JobStatus, utcnow
from service.sweeps import scheduler
from tests.helpers import ROOT, ended_run, tiny_spec, wait_for

from .conftest import WorkerProcess, store_job, wait_terminal, worker_env

pytestmark = pytest.mark.integration

# Long enough that no attempt gets to its end before the test pauses or cancels it.
LONG = 3000
# The SIGTERM test's job: its worker is told to stop at once (a signal), after epoch 3.
SIGTERM_EPOCHS = 1000


@pytest.fixture(scope="module", autouse=True)
def spare_worker(settings, workdir):
    """A second worker on a queue of its own (for the SIGTERM test, the module's last),
    started with the module so that it boots while the other tests run."""
    queue = f"sigterm-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(worker_env(settings), workdir / "pause-spare.log", queues=queue)
    yield w, queue
    w.stop()


def _job(client, job_id: str) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}").get_json()


def _training(get, job_id: str, attempt: int) -> dict:
    """The job once ``attempt`` has trained 3 epochs (``get``: reads the job by id)."""
    def ok():
        job = get(job_id)
        return job if job["status"] == "running" and job["attempts"] == attempt and \
            job["progress"]["epoch"] >= 3 else None

    return wait_for(ok, 120, 0.05, f"job {job_id} to train (attempt {attempt})")


def _status(get, job_id: str, status: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (job := get(job_id))["status"] == status and job, timeout, 0.05,
                    f"job {job_id} to be {status}")


def _row(settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        return {"attempts": job.attempts, "stopped_attempts": job.stopped_attempts,
                "pause_requested": job.pause_requested, "dispatched_at": job.dispatched_at}


def test_a_running_job_pauses_frees_its_worker_resumes_and_is_cancelled_while_paused(
        client, worker, settings, mlflow_client):
    get = lambda job_id: _job(client, job_id)  # noqa: E731
    job_id = client.post("/api/v1/jobs", json=tiny_spec("pause-api", epochs=LONG)).get_json()["id"]
    _training(get, job_id, 1)

    resp = client.post(f"/api/v1/jobs/{job_id}/pause")
    assert resp.status_code == 202, resp.get_json()
    asked = resp.get_json()
    assert asked["status"] == "paused" or asked["pause_requested"], asked
    paused = _status(get, job_id, "paused")
    assert 3 <= paused["progress"]["epoch"] < LONG
    assert not paused["pause_requested"] and paused["finished_at"] is None
    assert paused["error"] is None and paused["summary"] is None
    # The paused attempt's MLflow run ended KILLED, saying why; the job keeps it.
    run = ended_run(mlflow_client, paused["mlflow"]["run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["kerasyard.stopped"].startswith("paused after epoch")

    # The worker is freed: another job trains to its end while this one stays paused.
    other = client.post("/api/v1/jobs", json=tiny_spec("while-paused", epochs=2)).get_json()
    assert wait_terminal(client, other["id"], 120)["status"] == "succeeded"
    assert get(job_id)["status"] == "paused" and get(job_id)["attempts"] == 1

    again = client.post(f"/api/v1/jobs/{job_id}/pause")
    assert again.status_code == 200 and again.get_json()["status"] == "paused"
    listed = client.get("/api/v1/jobs?status=paused&limit=500").get_json()["jobs"]
    assert job_id in {j["id"] for j in listed}
    assert all(j["status"] == "paused" for j in listed)

    resp = client.post(f"/api/v1/jobs/{job_id}/resume")
    # Queued again; an idle worker may claim it before the answer is read back ("running").
    assert resp.status_code == 202 and resp.get_json()["status"] in ("queued", "running"), \
        resp.get_json()
    resumed = _training(get, job_id, 2)
    # It goes on from the checkpoint the pause wrote, at the epoch it paused after, in the
    # same MLflow run (reopened).
    assert resumed["resumed_from_epoch"] == paused["progress"]["epoch"], resumed
    assert resumed["mlflow"]["run_id"] == paused["mlflow"]["run_id"]
    resp = client.post(f"/api/v1/jobs/{job_id}/resume")
    assert resp.status_code == 409, resp.get_json()
    assert "is running; only a paused job" in resp.get_json()["error"]["message"]

    assert client.post(f"/api/v1/jobs/{job_id}/pause").status_code == 202
    _status(get, job_id, "paused")
    resp = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 202 and resp.get_json()["status"] == "cancelled"
    for action, says in (("pause", "is already cancelled"), ("resume", "is cancelled")):
        resp = client.post(f"/api/v1/jobs/{job_id}/{action}")
        assert resp.status_code == 409, resp.get_json()
        assert resp.get_json()["error"]["code"] == "illegal_state"
        assert says in resp.get_json()["error"]["message"]
    # Two attempts, both stopped on purpose: neither counts against KERASYARD_MAX_ATTEMPTS.
    row = _row(settings, job_id)
    assert (row["attempts"], row["stopped_attempts"]) == (2, 2)


def _messages_naming(settings, job_id: str) -> int:
    """The train messages on the (idle) broker's cpu queue that name the job."""
    return sum(job_id in m.decode(errors="replace")
               for m in redis.Redis.from_url(settings.broker_url).lrange("cpu", 0, -1))


def test_a_queued_job_pauses_at_once_and_no_worker_trains_it_until_resumed(
        idle_client, idle_settings):
    get = lambda job_id: _job(idle_client, job_id)  # noqa: E731
    job_id = idle_client.post("/api/v1/jobs", json=tiny_spec("pause-queued")).get_json()["id"]
    resp = idle_client.post(f"/api/v1/jobs/{job_id[:10]}/pause")  # an id prefix will do
    assert resp.status_code == 202 and resp.get_json()["status"] == "paused"
    assert _row(idle_settings, job_id)["dispatched_at"] is None
    # Its message is still in the broker: a worker's claim of it trains nothing.
    skip = lifecycle.claim(idle_settings, job_id, worker="test:1")
    assert isinstance(skip, lifecycle.Skip) and "is paused" in skip.reason
    assert get(job_id)["status"] == "paused" and get(job_id)["attempts"] == 0
    # The background round re-sends lost and unsent jobs, never a paused one.
    with session_scope(idle_settings.database_url) as s:
        s.get(Job, job_id).dispatched_at = utcnow() - dt.timedelta(days=1)
    sent = _messages_naming(idle_settings, job_id)
    dispatch_pending(idle_settings)
    assert _messages_naming(idle_settings, job_id) == sent
    assert get(job_id)["status"] == "paused"

    resp = idle_client.post(f"/api/v1/jobs/{job_id}/resume")
    assert resp.status_code == 202 and resp.get_json()["status"] == "queued"
    assert resp.get_json()["dispatched_at"] is not None  # sent again
    resp = idle_client.post(f"/api/v1/jobs/{job_id}/resume")
    assert resp.status_code == 409
    assert f"job {job_id} is queued; only a paused job" in resp.get_json()["error"]["message"]
    assert idle_client.post(f"/api/v1/jobs/{job_id}/pause").status_code == 202
    resp = idle_client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 202 and resp.get_json()["status"] == "cancelled"
    assert idle_client.post("/api/v1/jobs/nope/pause").status_code == 404
    assert idle_client.post("/api/v1/jobs/nope/resume").status_code == 404


def _stored(settings, **fields) -> str:
    spec = tiny_spec("pause-rules")
    _, plan = validate_job(spec)
    with session_scope(settings.database_url) as s:
        job = Job(name="pause-rules", experiment="tests", spec=spec, plan=plan.as_dict(),
                  **fields)
        s.add(job)
    return job.id


def test_the_lifecycle_rules_of_a_pause(settings):
    """The claim, the fenced writes and the stop, on the database alone."""
    old = utcnow() - dt.timedelta(seconds=settings.stale_heartbeat_s + 5)
    # Asked to pause while its worker died: the next delivery pauses it and trains nothing.
    lost = _stored(settings, status=JobStatus.running, attempts=1, worker="gone:1",
                   heartbeat_at=old, pause_requested=True)
    skip = lifecycle.claim(settings, lost, worker="test:1")
    assert isinstance(skip, lifecycle.Skip) and "was paused" in skip.reason
    assert _row(settings, lost)["pause_requested"] is False
    # Attempts that stopped on purpose do not count against max_attempts.
    n = settings.max_attempts
    stopped = _stored(settings, attempts=n, stopped_attempts=n)
    got = lifecycle.claim(settings, stopped, worker="test:1")
    assert isinstance(got, lifecycle.Claim) and got.fence.attempt == n + 1
    fence = got.fence
    # While a pause is asked for, the fenced writes answer PAUSE; a cancel beats it.
    assert lifecycle.heartbeat(settings, fence) is lifecycle.OWNED
    with session_scope(settings.database_url) as s:
        s.get(Job, stopped).pause_requested = True
    assert lifecycle.heartbeat(settings, fence) is lifecycle.PAUSE
    assert lifecycle.record_epochs(settings, fence, [(1, {"loss": 1.0})], None) \
        is lifecycle.PAUSE
    # The stop: paused, once; a retry whose first try landed learns it from stopped_as.
    assert lifecycle.stop(settings, fence) == JobStatus.paused
    assert lifecycle.stop(settings, fence) is None
    assert lifecycle.stopped_as(settings, fence) == JobStatus.paused
    row = _row(settings, stopped)
    assert (row["stopped_attempts"], row["pause_requested"]) == (n + 1, False)
    # A paused job's delivery trains nothing; once resumed, it is claimed again.
    skip = lifecycle.claim(settings, stopped, worker="test:1")
    assert isinstance(skip, lifecycle.Skip) and "is paused" in skip.reason
    with session_scope(settings.database_url) as s:
        assert lifecycle.resume(s, s.get(Job, stopped, with_for_update=True))
    again = lifecycle.claim(settings, stopped, worker="test:1")
    # Without a pause asked for (a worker's shutdown) the stop queues the job again.
    assert lifecycle.stop(settings, again.fence) == JobStatus.queued
    # A job asked to pause and to cancel: the cancel wins.
    with session_scope(settings.database_url) as s:
        job = s.get(Job, stopped)
        job.status, job.pause_requested, job.cancel_requested = JobStatus.running, True, True
    assert lifecycle.heartbeat(settings, again.fence) is lifecycle.CANCEL
    assert lifecycle.stop(settings, again.fence) == JobStatus.cancelled


def _sweep_jobs(client, sweep_id: str) -> list[dict]:
    return client.get(f"/api/v1/jobs?sweep_id={sweep_id}&limit=500").get_json()["jobs"]


def test_a_paused_sweep_starts_no_trial_until_resumed_then_finishes(client, worker, settings):
    # Epochs enough that the first trial is still training when its pause is read, at the
    # progress write after the request (its writes back off: worker/recording/pace.py).
    spec = {"name": "pause-sweep", "base": tiny_spec("pause-sweep", epochs=2000),
            "parameters": {"compile.optimizer.learning_rate": [0.05, 0.02]},
            "objective": {"metric": "loss"}, "max_parallel": 1, "pack": False}
    sweep_id = client.post("/api/v1/sweeps", json=spec).get_json()["id"]
    first = wait_for(lambda: next((j for j in _sweep_jobs(client, sweep_id)
                                   if j["status"] == "running" and j["progress"]["epoch"] >= 3),
                                  None), 120, 0.05, "the first trial to train")

    resp = client.post(f"/api/v1/sweeps/{sweep_id}/pause")
    assert resp.status_code == 202 and resp.get_json()["status"] == "paused", resp.get_json()
    _status(lambda i: _job(client, i), first["id"], "paused")
    # The scheduler's pass (the worker sends one when a trial stops; the background round
    # runs one too) starts nothing while the sweep is paused.
    scheduler.advance(settings, sweep_id, CelerySender(settings))
    jobs = _sweep_jobs(client, sweep_id)
    assert [j["status"] for j in jobs] == ["paused"], jobs
    got = client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
    assert got["progress"]["paused"] == 1 and got["progress"]["running"] == 0
    assert [t["state"] for t in got["trials"]] == ["paused", "pending"]
    assert client.post(f"/api/v1/sweeps/{sweep_id}/pause").status_code == 200
    assert sweep_id in {s["id"] for s in client.get("/api/v1/sweeps?status=paused&limit=500")
                        .get_json()["sweeps"]}

    resp = client.post(f"/api/v1/sweeps/{sweep_id}/resume")
    assert resp.status_code == 202 and resp.get_json()["status"] == "running", resp.get_json()
    seen: list = []

    def ended():
        sweep = client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
        seen[:] = [sweep["status"], [(j["status"], j["attempts"], j["progress"]["epoch"])
                                     for j in _sweep_jobs(client, sweep_id)]]
        return sweep if sweep["status"] not in ("running", "paused") else None

    try:
        done = wait_for(ended, 240, 0.2, "the sweep to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the sweep and its jobs: {seen}") from None
    assert done["status"] == "succeeded", done
    assert [t["state"] for t in done["trials"]] == ["succeeded", "succeeded"]
    assert _job(client, first["id"])["attempts"] == 2
    resp = client.post(f"/api/v1/sweeps/{sweep_id}/resume")
    assert resp.status_code == 409 and "is succeeded" in resp.get_json()["error"]["message"]
    assert client.post(f"/api/v1/sweeps/{sweep_id}/pause").status_code == 409


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_url(app):
    with ApiServer(app, quiet=True) as server:
        yield server.url


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kerasyard.cli", "--url", url, *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def test_pause_resume_and_cancel_a_job_with_the_cli(api_url, worker, tmp_path: Path):
    api = Client(api_url)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_spec("pause-cli", epochs=LONG)))
    out = cli(api_url, "submit", str(path))
    job_id = re.match(r"([0-9a-f]{32})\s", out.stdout).group(1)
    _training(api.get_job, job_id, 1)

    out = cli(api_url, "pause", job_id[:8])
    assert out.returncode == 0, out.stderr
    assert f"pause requested for job pause-cli ({job_id[:8]})" in out.stdout
    # A watch ends when the job is paused: exit 4, and how to go on.
    out = cli(api_url, "watch", job_id[:8], "--interval", "0.1")
    assert out.returncode == 4, (out.stdout, out.stderr)
    assert "paused after epoch" in out.stdout
    assert f"kerasyard resume {job_id[:8]} continues it" in out.stderr
    assert job_id[:8] in cli(api_url, "jobs", "--status", "paused").stdout

    out = cli(api_url, "resume", job_id[:8])
    assert out.returncode == 0 and "now queued" in out.stdout, (out.stdout, out.stderr)
    _training(api.get_job, job_id, 2)
    assert cli(api_url, "pause", job_id[:8]).returncode == 0
    _status(api.get_job, job_id, "paused")
    out = cli(api_url, "cancel", job_id[:8])
    assert out.returncode == 0 and "now cancelled" in out.stdout, (out.stdout, out.stderr)
    out = cli(api_url, "resume", job_id[:8])
    assert out.returncode == 2 and "illegal_state" in out.stderr, (out.stdout, out.stderr)
    assert f"job {job_id} is cancelled; only a paused job" in out.stderr


def test_pause_resume_and_cancel_a_packed_sweep_with_the_cli(api_url, worker, tmp_path: Path):
    """One training carries the other trial as a tower of its pack: the carried trial pauses,
    queues and is cancelled with it."""
    api = Client(api_url)
    spec = {"name": "pause-cli-sweep", "base": tiny_spec("pause-cli-sweep", epochs=LONG),
            "parameters": {"compile.optimizer.learning_rate": [0.05, 0.02]},
            "objective": {"metric": "loss"}, "max_parallel": 1}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = cli(api_url, "sweep", str(path))
    sweep_id = re.match(r"([0-9a-f]{32})\s", out.stdout).group(1)

    def jobs() -> dict[str, dict]:  # "trainer" and "carried"
        rows = api.list_jobs(sweep_id=sweep_id)["jobs"]
        return {("carried" if j["trained_by"] else "trainer"): j for j in rows}

    trainer = wait_for(lambda: len(js := jobs()) == 2 and js["trainer"]["status"] == "running"
                       and js["trainer"]["progress"]["epoch"] >= 3 and js["trainer"], 120, 0.05,
                       "the pack to train")
    out = cli(api_url, "pause", sweep_id[:8])
    assert out.returncode == 0 and "paused" in out.stdout, (out.stdout, out.stderr)
    wait_for(lambda: {j["status"] for j in jobs().values()} == {"paused"}, 60, 0.1,
             "the pack and its carried trial to pause")
    out = cli(api_url, "watch", sweep_id[:8])
    assert out.returncode == 4 and "paused" in out.stdout, (out.stdout, out.stderr)

    out = cli(api_url, "resume", sweep_id[:8])
    assert out.returncode == 0 and "now running" in out.stdout, (out.stdout, out.stderr)
    wait_for(lambda: (js := jobs())["trainer"]["attempts"] == 2 and
             {j["status"] for j in js.values()} == {"running"}, 120, 0.05,
             "the pack to train again, carrying its trial")
    assert cli(api_url, "pause", sweep_id[:8]).returncode == 0
    wait_for(lambda: {j["status"] for j in jobs().values()} == {"paused"}, 60, 0.1,
             "the pack to pause again")
    out = cli(api_url, "cancel", sweep_id[:8])
    assert out.returncode == 0, (out.stdout, out.stderr)
    ended = wait_for(lambda: (s := api.get_sweep(sweep_id))["status"] == "cancelled" and s,
                     60, 0.2, "the sweep to be cancelled")
    assert {j["status"] for j in jobs().values()} == {"cancelled"}
    assert [t["state"] for t in ended["trials"]] == ["cancelled", "cancelled"]
    assert api.get_job(trainer["id"])["attempts"] == 2


# --- SIGTERM ---------------------------------------------------------------------------------


def test_a_worker_asked_to_stop_stops_at_an_epoch_boundary_and_the_next_worker_trains_the_job(
        settings, worker, spare_worker, client, mlflow_client):
    """Worker A (the spare, on its own queue) trains a job of the cpu queue; A's main process
    gets SIGTERM (Celery's warm shutdown, as `docker compose stop` sends it): A's training
    stops at the next epoch boundary, the job goes back to the queue, A exits 0, and the
    session's worker trains the job to its end."""
    a, queue = spare_worker
    job_id = store_job(settings, tiny_spec("sigterm", epochs=SIGTERM_EPOCHS), "cpu")
    a.wait_ready()
    assert lifecycle.dispatch(settings, CelerySender(settings), job_id, queue)
    first = _training(lambda i: _job(client, i), job_id, 1)
    os.kill(a.proc.pid, signal.SIGTERM)
    t0 = time.monotonic()
    assert a.proc.wait(timeout=90) == 0, a.tail()
    print(f"\nworker A exited {time.monotonic() - t0:.1f} s after SIGTERM")
    done = wait_terminal(client, job_id, 180)
    assert done["status"] == "succeeded", (done["error"], a.tail())
    assert done["attempts"] == 2 and done["error"] is None
    assert done["worker"] != first["worker"]
    assert done["summary"]["epochs_completed"] == SIGTERM_EPOCHS
    assert _row(settings, job_id)["stopped_attempts"] == 1  # not a lost attempt
    # The second attempt went on from the checkpoint the shutdown wrote, in the same MLflow
    # run: one FINISHED run with one point per epoch.
    assert done["resumed_from_epoch"] is not None and done["resumed_from_epoch"] >= 3, done
    assert done["mlflow"]["run_id"] == first["mlflow"]["run_id"]
    assert ended_run(mlflow_client, done["mlflow"]["run_id"]).info.status == "FINISHED"
    steps = [m.step for m in mlflow_client.get_metric_history(done["mlflow"]["run_id"], "loss")]
    assert sorted(steps) == list(range(1, SIGTERM_EPOCHS + 1)), steps
    log = a.text()
    assert "warm shutdown: 1 training process asked to stop" in log
    assert re.search(rf"job {job_id}: stopped after epoch (\d+): its worker was shut down",
                     log), log[-3000:]
