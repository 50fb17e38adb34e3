"""A worker that was only paused comes back after its job was handed to another: fencing.

Real processes: worker A trains a job; A (parent and child) is frozen with SIGSTOP; its
heartbeat is made stale; the API's background round requeues the job and sends it again;
worker B claims it (attempt 2) and trains it to the end; then A is let go (SIGCONT).
A's writes must change nothing: it learns it was superseded, stops at its next epoch
boundary and leaves the job, its epochs and MLflow to B.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text

from service import lifecycle
from service.background import dispatch_pending
from service.queue import CelerySender
from service.store.db import get_engine, session_scope
from service.store.models import Job, JobEpoch, JobStatus
from tests.helpers import ended_run, tiny_spec, wait_for

from .conftest import WorkerProcess, store_job, worker_env

pytestmark = pytest.mark.integration

EPOCHS = 1500


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def open_transactions(settings) -> int:
    """Sessions on the test database, other than ours, inside a transaction."""
    with get_engine(settings.database_url).connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'")).scalar()


def job_row(settings, job_id: str) -> dict:
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job_id)
        return {"status": j.status, "attempts": j.attempts, "worker": j.worker,
                "progress": j.progress, "summary": j.summary, "error": j.error,
                "heartbeat_at": j.heartbeat_at, "finished_at": j.finished_at,
                "mlflow_run_id": j.mlflow_run_id}


def epoch_rows(settings, job_id: str) -> list[tuple[int, dict]]:
    with session_scope(settings.database_url) as s:
        return [(r.epoch, r.metrics) for r in s.scalars(
            select(JobEpoch).where(JobEpoch.job_id == job_id).order_by(JobEpoch.epoch))]


def test_a_superseded_worker_writes_nothing(settings, workdir, mlflow_client):
    queue = f"takeover-{uuid.uuid4().hex[:6]}"  # only these two workers listen here
    spec = tiny_spec("takeover", epochs=EPOCHS)
    job_id = store_job(settings, spec, queue)

    a = WorkerProcess(worker_env(settings), workdir / "takeover-a.log", queues=queue)
    b = None
    frozen: list[int] = []
    try:
        a.wait_ready()
        assert lifecycle.dispatch(settings, CelerySender(settings), job_id, queue)

        def training():
            row = job_row(settings, job_id)
            return row if row["status"] == JobStatus.running and \
                (row["progress"] or {}).get("epoch", 0) >= 3 else None

        first = wait_for(training, 120, 0.05, "worker A to be training")
        assert first["attempts"] == 1 and first["mlflow_run_id"]
        a_worker, a_run = first["worker"], first["mlflow_run_id"]

        # Freeze A, never in the middle of a transaction (it would hold the row lock).
        for _ in range(50):
            frozen = process_tree(a.proc.pid)
            signal_all(frozen, signal.SIGSTOP)
            time.sleep(0.2)
            if open_transactions(settings) == 0:
                break
            signal_all(frozen, signal.SIGCONT)
            time.sleep(0.05)
        else:
            pytest.fail("worker A was always inside a transaction")
        stopped_at = job_row(settings, job_id)
        assert stopped_at["status"] == JobStatus.running, "A finished before it was frozen"
        a_epochs = stopped_at["progress"]["epoch"]
        assert a_epochs < EPOCHS

        # A's heartbeat goes stale; the background round requeues the job and sends it again.
        with session_scope(settings.database_url) as s:
            s.execute(text("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' "
                           "WHERE id = :id"), {"id": job_id})
        assert dispatch_pending(settings) >= 1
        assert job_row(settings, job_id)["status"] == JobStatus.queued

        b = WorkerProcess(worker_env(settings), workdir / "takeover-b.log", queues=queue)
        b.wait_ready()

        def ended():
            row = job_row(settings, job_id)
            return row if row["status"].terminal else None

        done = wait_for(ended, 240, 0.2, "worker B to finish the job")
        assert done["status"] == JobStatus.succeeded, (done["error"], b.text()[-3000:])
        assert done["attempts"] == 2
        b_worker = done["worker"]
        assert b_worker != a_worker
        assert int(b_worker.rsplit(":", 1)[1]) in process_tree(b.proc.pid)
        assert done["progress"]["epoch"] == EPOCHS
        assert done["mlflow_run_id"] and done["mlflow_run_id"] != a_run
        rows_b = epoch_rows(settings, job_id)

        # Let A go on: it must find out it was superseded and stop without a trace.
        signal_all(frozen, signal.SIGCONT)
        frozen = []
        wait_for(lambda: "stopped as superseded" in a.text(), 120, 0.2,
                 "worker A to stop as superseded")
        wait_for(lambda: "succeeded in" in a.text() and "'superseded'" in a.text(), 60, 0.2,
                 "worker A's task to return")
        time.sleep(1.0)  # anything A still had in flight
        assert job_row(settings, job_id) == done
        assert epoch_rows(settings, job_id) == rows_b
    finally:
        signal_all(frozen, signal.SIGCONT)
        a.stop()
        if b is not None:
            b.stop()

    # A stopped at an epoch boundary soon after it was let go, not at the end of its epochs.
    line = next(ln for ln in a.text().splitlines() if "stopped as superseded" in ln)
    a_trained = int(line.split(" after ", 1)[1].split()[0])
    assert a_epochs <= a_trained < EPOCHS, line

    # The epoch rows: 1..EPOCHS once each, equal to B's run's metrics in MLflow.
    assert [e for e, _ in rows_b] == list(range(1, EPOCHS + 1))
    ended_run(mlflow_client, done["mlflow_run_id"])
    runs = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("tests").experiment_id],
        filter_string=f"tags.`kerasyard.job_id` = '{job_id}'")
    by_id = {r.info.run_id: r for r in runs}
    assert set(by_id) == {a_run, done["mlflow_run_id"]}
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert [r.info.run_id for r in finished] == [done["mlflow_run_id"]]
    assert by_id[a_run].info.status in ("FAILED", "KILLED")
    assert "attempt 1" in by_id[a_run].data.tags.get("kerasyard.error", "")
    for name in rows_b[0][1]:
        history = {m.step: m.value for m in
                   mlflow_client.get_metric_history(done["mlflow_run_id"], name)}
        assert history == pytest.approx({e: m[name] for e, m in rows_b}), name
