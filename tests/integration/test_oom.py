"""A training child killed by the kernel's OOM killer fails its job with that reason, once.

Real processes and a real OOM kill: a cgroup v1 memory cgroup of the test's own (a child of
this process's cgroup, 100 MB for new allocations) takes a ready worker (parent and its
Keras-loaded child); a job whose training needs a few hundred MB gets the child killed by the
kernel. Skipped where no memory cgroup can be created (not root, cgroup v2 without
delegation, a read-only /sys/fs/cgroup).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest

from service.config import Settings
from service.store.db import session_scope
from service.store.models import Job, JobStatus
from tests.helpers import wait_for

from .test_mlflow_faults import submit
from .test_takeover import process_tree

pytestmark = pytest.mark.integration

LIMIT_MB = 100


def own_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return base if (base / "memory.oom_control").exists() else None
    return None


@pytest.fixture()
def fsettings(pg_database, redis_url, workdir) -> Settings:
    return dataclasses.replace(
        Settings.from_env(), data_dir=workdir, database_url=pg_database, broker_url=redis_url,
        mlflow_tracking_uri="http://127.0.0.1:9", mlflow_logging=False, report_interval_s=0.1,
        api_token=None)


@pytest.fixture()
def oom_cgroup():
    base = own_memory_cgroup()
    if base is None:
        pytest.skip("no cgroup v1 memory controller for this process")
    cg = base / f"kerasyard-oom-{uuid.uuid4().hex[:6]}"
    try:
        cg.mkdir()
        (cg / "memory.limit_in_bytes").write_text(str(LIMIT_MB * 1024 * 1024))
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup here: {exc}")
    yield cg
    parent_procs = base / "cgroup.procs"
    for pid in (cg / "cgroup.procs").read_text().split():
        try:
            parent_procs.write_text(pid)
        except OSError:
            pass
    for _ in range(50):
        try:
            cg.rmdir()
            break
        except OSError:
            time.sleep(0.2)


def big_spec() -> dict:
    """A few hundred MB of training (weights, Adam slots, 8192 x 2048 activations); well
    inside the service's 2 GB estimate cap."""
    return {
        "name": "oom", "experiment": "tests",
        "dataset": {"kind": "synthetic", "name": "circle", "n_samples": 50000, "seed": 1},
        "model": {"layers": [{"type": "dense", "units": 2048, "activation": "relu"},
                             {"type": "dense", "units": 2048, "activation": "relu"},
                             {"type": "dense", "units": 1, "activation": "sigmoid"}]},
        "compile": {"loss": "binary_crossentropy",
                    "optimizer": {"name": "adam", "learning_rate": 0.001}},
        "fit": {"batch_size": 8192, "epochs": 50, "seed": 0},
    }


def test_an_oom_killed_training_fails_the_job_without_retry(fsettings, workdir, oom_cgroup):
    from devstack import WorkerProcess, worker_env

    queue = f"oom-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(worker_env(fsettings, KERASYARD_MLFLOW_LOGGING="false"),
                      workdir / "oom-worker.log", queues=queue, new_session=True)
    try:
        w.wait_ready()
        for pid in process_tree(w.proc.pid):  # parent and Keras-loaded child
            (oom_cgroup / "cgroup.procs").write_text(str(pid))
        kills_before = int((oom_cgroup / "memory.oom_control").read_text()
                           .split("oom_kill ")[1].split()[0])
        job_id = submit(fsettings, big_spec(), queue)

        def ended():
            with session_scope(fsettings.database_url) as s:
                j = s.get(Job, job_id)
                return j.status.terminal and (j.status, j.error, j.attempts)

        status, error, attempts = wait_for(ended, 240, 0.2, "the job to end")
        kills = int((oom_cgroup / "memory.oom_control").read_text()
                    .split("oom_kill ")[1].split()[0])
        # Room for a replacement child to import Keras: it gets the re-delivered message and
        # its claim drops it (the job has ended).
        (oom_cgroup / "memory.limit_in_bytes").write_text(str(4 * 1024**3))
        wait_for(lambda: "already failed" in w.text(), 120, 0.5,
                 "the re-delivered message to be dropped by the claim")
        with session_scope(fsettings.database_url) as s:
            j = s.get(Job, job_id)
            assert (j.status, j.attempts) == (JobStatus.failed, 1)
        log = w.text()
    finally:
        w.stop()
    assert kills > kills_before, "the kernel did not OOM-kill anything"
    assert status == JobStatus.failed, (error, log[-3000:])
    assert error["type"] == "OutOfMemory", error
    assert "killed by the out-of-memory killer" in error["message"]
    assert "memory" in error["message"] and "MB" in error["message"]
    assert attempts == 1  # not handed to another attempt
    assert "killed by the out-of-memory killer" in log
