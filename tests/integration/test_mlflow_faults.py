"""MLflow outages with real processes: a test-owned `mlflow server` is stopped and started
again on the same port and backend store while Celery workers train.

(a) down when the job starts, back after ~10 s  -> succeeded, one FINISHED run;
(b) down for ~25 s during training              -> succeeded, every epoch in MLflow;
(c) down when fit ends (artifacts, model)       -> succeeded, FINISHED with its artifacts;
(d) down past the retry bound (8 s here)        -> failed, naming MLflow and the step; once
    MLflow is back, worker.reconcile_runs ends the run FAILED (not RUNNING for ever).
(f) the answers of a log_batch lost after MLflow applied it (a proxy of the test's own,
    tests/http_proxy.py)                        -> one point per epoch per metric.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid

import pytest
from sqlalchemy import select

from devstack import MlflowServer, WorkerProcess, worker_env
from service import lifecycle
from service.config import Settings
from service.queue import CelerySender
from service.store.db import session_scope
from service.store.models import Job, JobEpoch, JobStatus
from tests.helpers import tiny_spec, wait_for
from tests.http_proxy import HttpProxy

from .conftest import store_job

pytestmark = pytest.mark.integration

SHORT_BOUND_S = 8


class Mlflow:
    """An mlflow server that can be stopped and started on the same port and store."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.server = MlflowServer(data_dir, new_session=True, cwd=data_dir)
        self.port, self.url = self.server.port, self.server.url

    def stop(self) -> None:
        self.server.stop(timeout=10)

    def start(self) -> float:
        t0 = time.monotonic()
        self.server = MlflowServer(self.data_dir, port=self.port, new_session=True,
                                   cwd=self.data_dir, append=True)
        return time.monotonic() - t0

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url)


@pytest.fixture(scope="module")
def mlflow(workdir):
    d = workdir / f"faults-mlflow-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    m = Mlflow(d)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def fsettings(pg_database, redis_url, workdir, mlflow) -> Settings:
    return dataclasses.replace(
        Settings.from_env(), data_dir=workdir, database_url=pg_database, broker_url=redis_url,
        mlflow_tracking_uri=mlflow.url, mlflow_ui_url=mlflow.url, report_interval_s=0.1,
        api_token=None, default_queue=f"mlf-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def workers(fsettings, workdir):
    """One worker with the default bound (120 s) on fsettings.default_queue, one with an
    8 s bound on its own queue; started together."""
    short_q = f"mlf-short-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(worker_env(fsettings), workdir / "mlf-worker.log",
                      queues=fsettings.default_queue, new_session=True)
    short = WorkerProcess(worker_env(fsettings, KERASYARD_MLFLOW_RETRY_S=str(SHORT_BOUND_S)),
                          workdir / "mlf-worker-short.log", queues=short_q, new_session=True)
    try:
        w.wait_ready()
        short.wait_ready()
        yield {"main": w, "short": short, "short_queue": short_q}
    finally:
        w.stop()
        short.stop()


def submit(settings: Settings, spec: dict, queue: str) -> str:
    job_id = store_job(settings, spec, queue)
    assert lifecycle.dispatch(settings, CelerySender(settings), job_id, queue)
    return job_id


def row(settings: Settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job_id)
        return {"status": j.status, "progress": j.progress or {}, "error": j.error,
                "attempts": j.attempts, "mlflow_run_id": j.mlflow_run_id}


def worker_of(settings: Settings, job_id: str) -> str:
    """The job row's ``worker``: ``name:pid`` of the process training it."""
    with session_scope(settings.database_url) as s:
        return s.get(Job, job_id).worker


def epochs_of(settings: Settings, job_id: str) -> list[int]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(JobEpoch.epoch).where(JobEpoch.job_id == job_id)
                              .order_by(JobEpoch.epoch)))


def wait_progress(settings, job_id, epoch, timeout=120, interval=0.05):
    return wait_for(lambda: (r := row(settings, job_id))["progress"].get("epoch", 0) >= epoch
                    and r["status"] == JobStatus.running and r, timeout, interval,
                    f"job {job_id} at epoch {epoch}")


def wait_end(settings, job_id, timeout=240) -> dict:
    return wait_for(lambda: (r := row(settings, job_id))["status"].terminal and r, timeout,
                    0.2, f"job {job_id} to end")


def runs_of(mlflow: Mlflow, job_id: str) -> list:
    cl = mlflow.client()
    exp = cl.get_experiment_by_name("tests")
    return cl.search_runs([exp.experiment_id],
                          filter_string=f"tags.`kerasyard.job_id` = '{job_id}'")


def check_succeeded(settings, mlflow, job_id, done, epochs, artifacts=False) -> None:
    assert done["status"] == JobStatus.succeeded, done["error"]
    assert done["attempts"] == 1
    assert epochs_of(settings, job_id) == list(range(1, epochs + 1))
    runs = runs_of(mlflow, job_id)
    assert [r.info.status for r in runs] == ["FINISHED"], [r.info.run_id for r in runs]
    assert runs[0].info.run_id == done["mlflow_run_id"] and runs[0].info.end_time
    cl = mlflow.client()
    steps = sorted(m.step for m in cl.get_metric_history(done["mlflow_run_id"], "loss"))
    assert steps == list(range(1, epochs + 1))
    if artifacts:
        names = {a.path for a in cl.list_artifacts(done["mlflow_run_id"])}
        assert {"spec.json", "history.csv", "learning_curve.svg"} <= names, names


def test_a_mlflow_down_when_the_job_starts(fsettings, mlflow, workers):
    mlflow.stop()
    t0 = time.monotonic()
    job_id = submit(fsettings, tiny_spec("mlf-a", epochs=5), fsettings.default_queue)
    wait_for(lambda: row(fsettings, job_id)["status"] == JobStatus.running, 60, 0.1, "claim")
    time.sleep(10)
    assert row(fsettings, job_id)["status"] == JobStatus.running  # waiting, not failed
    mlflow.start()
    done = wait_end(fsettings, job_id)
    print(f"(a) job took {time.monotonic() - t0:.1f} s")
    check_succeeded(fsettings, mlflow, job_id, done, 5)


def test_b_mlflow_down_during_training(fsettings, mlflow, workers):
    epochs = 400
    job_id = submit(fsettings, tiny_spec("mlf-b", epochs=epochs), fsettings.default_queue)
    wait_progress(fsettings, job_id, 3)
    # The training process is frozen while MLflow stops, so that it is still training when
    # MLflow goes, however fast its epochs or slow the stop.
    pid = int(worker_of(fsettings, job_id).rsplit(":", 1)[1])
    os.kill(pid, signal.SIGSTOP)
    try:
        at = row(fsettings, job_id)["progress"]["epoch"]
        mlflow.stop()
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(25)
    mlflow.start()
    done = wait_end(fsettings, job_id)
    print(f"(b) MLflow stopped at epoch {at} of {epochs}")
    assert at < epochs
    check_succeeded(fsettings, mlflow, job_id, done, epochs)


def test_c_mlflow_down_when_fit_ends(fsettings, mlflow, workers):
    epochs = 60
    log = workers["main"]
    mark = len(log.text())
    job_id = submit(fsettings, tiny_spec("mlf-c", epochs=epochs), fsettings.default_queue)
    wait_progress(fsettings, job_id, epochs, interval=0.01)
    mlflow.stop()
    time.sleep(10)
    mlflow.start()
    done = wait_end(fsettings, job_id)
    assert "MLflow did not answer while" in log.text()[mark:], "the outage missed the end"
    check_succeeded(fsettings, mlflow, job_id, done, epochs, artifacts=True)


def test_d_mlflow_down_past_the_bound_then_reconciled(fsettings, mlflow, workers):
    epochs = 300
    job_id = submit(fsettings, tiny_spec("mlf-d", epochs=epochs), workers["short_queue"])
    first = wait_progress(fsettings, job_id, 3)
    run_id = first["mlflow_run_id"]
    mlflow.stop()
    t0 = time.monotonic()
    try:
        done = wait_end(fsettings, job_id, timeout=180)
        waited = time.monotonic() - t0
    finally:
        mlflow.start()
    print(f"(d) the job failed {waited:.1f} s after MLflow went down: {done['error']}")
    assert done["status"] == JobStatus.failed
    err = done["error"]
    assert err["type"] == "MlflowUnavailable", err
    assert mlflow.url in err["message"] and "did not answer while" in err["message"]
    assert "KERASYARD_MLFLOW_RETRY_S" in err["message"]
    assert done["mlflow_run_id"] == run_id
    assert mlflow.client().get_run(run_id).info.status == "RUNNING"  # nobody ended it yet

    # The API's background round sends this every KERASYARD_RECONCILE_S.
    assert CelerySender(dataclasses.replace(
        fsettings, default_queue=workers["short_queue"])).reconcile_runs()
    run = wait_for(lambda: (r := mlflow.client().get_run(run_id)).info.status != "RUNNING"
                   and r, 60, 0.5, "the reconciler to end the run")
    assert run.info.status == "FAILED" and run.info.end_time
    assert run.data.tags["kerasyard.error"] == err["message"][:5000]
    assert "kerasyard.reconciled" in run.data.tags
    assert [r.info.status for r in runs_of(mlflow, job_id)] == ["FAILED"]


def test_e_the_reconciler_never_relabels_finished_runs(fsettings, mlflow, workers):
    cl = mlflow.client()
    exp = cl.get_experiment_by_name("tests")
    before = {r.info.run_id: r.info.status for r in cl.search_runs([exp.experiment_id])}
    from worker.jobs.reconcile import reconcile

    counts = reconcile(fsettings)
    after = {r.info.run_id: r.info.status for r in cl.search_runs([exp.experiment_id])}
    assert "RUNNING" not in after.values(), counts
    assert {k for k, v in before.items() if v == "FINISHED"} == \
        {k for k, v in after.items() if v == "FINISHED"}


def test_f_a_lost_log_batch_answer_leaves_one_point_per_epoch(fsettings, mlflow, monkeypatch):
    """The worker's reporter (in this process, on a claimed job) sends epochs to MLflow
    through a proxy that loses the answers of one log_batch call, every try of it, after
    MLflow stored its metrics; the reporter sends those epochs again with the next ones."""
    from service import worker_api
    from worker.recording import tracking
    from worker.recording.reporter import Reporter, Signals

    # The worker's own MLflow client settings (worker/celery_app.py), without backoff.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    proxy = HttpProxy(mlflow.url).start()
    try:
        job_id = store_job(fsettings, tiny_spec("mlf-lost-answer", epochs=10),
                           f"lost-{uuid.uuid4().hex[:6]}")
        claimed = worker_api.claim(fsettings, job_id)
        cl = tracking.client(proxy.url)
        run_id = tracking.start_run(cl, tracking.experiment_id(cl, "tests"), "lost-answer",
                                    {"kerasyard.job_id": job_id}, {})
        st = dataclasses.replace(fsettings, mlflow_flush_interval_s=0.0, mlflow_max_duty=1.0)
        reporter = Reporter(st, claimed.fence, 10, Signals())
        reporter.mlflow, reporter.run_id = cl, run_id

        def epochs(first, last):
            for e in range(first, last + 1):
                reporter.epoch(e, {"loss": 1.0 / e, "accuracy": e / 10})

        epochs(1, 4)
        proxy.lose_answers(3, "/runs/log-batch")  # the call and MLflow's client's 2 retries
        reporter.flush(final=True)
        assert len(proxy.lost) == 3 and reporter.mlflow_errors == 1
        assert reporter.mlflow_pending() == 4  # kept for the next flush
        epochs(5, 10)
        reporter.flush(final=True)
        assert reporter.mlflow_pending() == 0
        direct = mlflow.client()
        for key in ("loss", "accuracy"):
            steps = sorted(m.step for m in direct.get_metric_history(run_id, key))
            assert steps == list(range(1, 11)), (key, steps)
        cl.set_terminated(run_id, "FINISHED")
    finally:
        proxy.close()
