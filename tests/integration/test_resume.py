"""Resume after a killed training process (PostgreSQL, a Redis of this module's own, a Celery
worker process with two children, the session's MLflow server): a plain job, a job with
dropout, a pack and a training that carries a shorter trial, each SIGKILLed mid-way once a
checkpoint exists and the killed attempt has logged epochs after it, end equal to an uncut
run of the same spec: every epoch's metrics (not epoch_time_s) and the final weights (the
models MLflow holds), ``resumed_from_epoch`` set, one FINISHED MLflow run per job with one
point per epoch for every metric.

The worker checkpoints every 0.3 s (``KERASYARD_CHECKPOINT_S``) and logs to MLflow every
0.1 s; an epoch takes a few milliseconds, so that many epochs lie between two checkpoints
however busy the machine, and reach MLflow. The killed child's message comes back (acked
late) and the pool's other child, or its replacement, takes the job over from the
checkpoint. The uncut runs train on the other child meanwhile.
"""

from __future__ import annotations

import dataclasses
import signal
import time
import uuid

import mlflow
import numpy as np
import pytest
import redis
from sqlalchemy import select

from devstack import RedisServer, WorkerProcess, worker_env
from service.store.db import session_scope
from service.store.models import Checkpoint
from tests.helpers import ended_run, tiny_spec, wait_for

from .test_takeover import signal_all

pytestmark = pytest.mark.integration

EPOCHS = 1000
TIMEOUT_S = 600  # for a busy machine; the tests take well under a minute alone


@pytest.fixture(scope="module")
def rsettings(settings, tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("resume-redis"))
    yield dataclasses.replace(settings, broker_url=server.url)
    server.stop()


@pytest.fixture(scope="module")
def rclient(rsettings):
    from service.api import create_app

    return create_app(rsettings).test_client()


@pytest.fixture(scope="module")
def rworker(rsettings, workdir):
    # Checkpoints, progress writes and MLflow calls far more often than by default (no
    # back-off: KERASYARD_REPORT_INTERVAL_MAX_S), so that the kill can come at a moment when
    # MLflow has epochs past the checkpoint in a training of a few seconds.
    w = WorkerProcess(worker_env(rsettings, KERASYARD_CHECKPOINT_S="0.3",
                                 KERASYARD_MLFLOW_FLUSH_INTERVAL_S="0.1",
                                 KERASYARD_REPORT_INTERVAL_S="0.1",
                                 KERASYARD_REPORT_INTERVAL_MAX_S="0.1",
                                 KERASYARD_MLFLOW_MAX_DUTY="1"),
                      workdir / "resume-worker.log", queues="cpu", concurrency=2,
                      name=f"resume-{uuid.uuid4().hex[:6]}@%h")
    try:
        w.wait_ready(timeout=600)  # a busy machine takes minutes to import Keras twice
    except Exception:
        w.stop()
        raise
    yield w
    w.stop()


@pytest.fixture(autouse=True)
def _empty_broker(rsettings):
    redis.Redis.from_url(rsettings.broker_url).flushdb()


def fast_spec(name: str, dropout: float = 0.0, epochs: int = EPOCHS) -> dict:
    """tests.helpers.tiny_spec (48 training rows, batch size 16) for ``epochs`` epochs of a
    few milliseconds each, 16 rows held out."""
    spec = tiny_spec(name, epochs=epochs)
    spec["fit"]["validation_split"] = 0.25
    if dropout:
        spec["model"]["layers"].insert(1, {"type": "dropout", "rate": dropout})
    return spec


def job(client, job_id: str) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}").get_json()


def loss_steps(mlflow_client, run_id: str | None) -> list[int]:
    if not run_id:
        return []
    return [m.step for m in mlflow_client.get_metric_history(run_id, "loss")]


def checkpoint_epoch(settings, job_id: str) -> int | None:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(Checkpoint.epoch).where(Checkpoint.job_id == job_id))


def kill_after_a_checkpoint(settings, client, mlflow_client, job_id: str,
                            after: int = 100) -> dict:
    """SIGKILL the child training ``job_id`` at a moment when its checkpoint is at an epoch
    c >= ``after``, MLflow has epochs after c from it, and epochs are left to train. Judged
    with the child frozen (SIGSTOP), so that nothing moves between the look and the kill
    however long the look takes; returns what was seen."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        j = job(client, job_id)
        assert j["status"] in ("queued", "running"), j
        epochs, c = j["plan"]["epochs"], checkpoint_epoch(settings, job_id)
        if j["status"] != "running" or c is None or c < after:
            time.sleep(0.01)
            continue
        pid = int(j["worker"].rsplit(":", 1)[1])
        signal_all([pid], signal.SIGSTOP)
        seen = {"checkpoint": checkpoint_epoch(settings, job_id),
                "progress": job(client, job_id)["progress"]["epoch"],
                "mlflow": max(loss_steps(mlflow_client, j["mlflow"]["run_id"]), default=0),
                "run_id": j["mlflow"]["run_id"]}
        if seen["mlflow"] > seen["checkpoint"] and seen["progress"] < epochs - 1:
            signal_all([pid], signal.SIGKILL)
            return seen
        signal_all([pid], signal.SIGCONT)
        if seen["progress"] >= epochs - 1:
            pytest.fail(f"the job trained to epoch {seen['progress']} before a kill: {seen}")
        time.sleep(0.1)  # its next MLflow flush
    pytest.fail(f"no moment to kill job {job_id} came")


def wait_ended(client, worker, ids: list[str], timeout: float = TIMEOUT_S
               ) -> dict[str, dict]:
    def done():
        worker.check_alive()
        got = {i: job(client, i) for i in ids}
        return got if all(j["status"] not in ("queued", "running") for j in got.values()) \
            else None

    return wait_for(done, timeout, 0.2, f"jobs {ids} to end")


def strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in history]


def assert_equal_trainings(client, mlflow_client, resumed: dict, uncut: dict) -> None:
    """Equal epochs (history and MLflow), one FINISHED run with one point per epoch per
    metric, equal final weights."""
    h = client.get(f"/api/v1/jobs/{resumed['id']}/history").get_json()["epochs"]
    h_uncut = client.get(f"/api/v1/jobs/{uncut['id']}/history").get_json()["epochs"]
    epochs = resumed["plan"]["epochs"]
    assert [e["epoch"] for e in h] == list(range(1, epochs + 1))
    assert strip(h) == strip(h_uncut)
    run_id, uncut_run = resumed["mlflow"]["run_id"], uncut["mlflow"]["run_id"]
    run = ended_run(mlflow_client, run_id)
    assert run.info.status == "FINISHED"
    runs = mlflow_client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`kerasyard.job_id` = '{resumed['id']}'")
    assert [r.info.run_id for r in runs] == [run_id]  # the one run, resumed in
    for name in h[0]:
        if name == "epoch":
            continue
        points = mlflow_client.get_metric_history(run_id, name)
        assert sorted(m.step for m in points) == list(range(1, epochs + 1)), name
        if name != "epoch_time_s":
            assert {m.step: m.value for m in points} == {e["epoch"]: e[name] for e in h}, name
            assert {m.step: m.value for m in points} == \
                {m.step: m.value for m in mlflow_client.get_metric_history(uncut_run, name)}
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    a = mlflow.keras.load_model(f"runs:/{run_id}/model")
    b = mlflow.keras.load_model(f"runs:/{uncut_run}/model")
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def submit(client, spec) -> str:
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def assert_resumed(rsettings, mlflow_client, resumed: dict, seen: dict) -> None:
    """Attempt 2 went on from a checkpoint at least as new as the one seen and before the
    kill's epoch, in the killed attempt's run, which had epochs after it (logged once all the
    same: :func:`assert_equal_trainings`); the checkpoint went with the ended job."""
    assert resumed["status"] == "succeeded" and resumed["attempts"] == 2, resumed
    assert seen["checkpoint"] <= resumed["resumed_from_epoch"] <= seen["progress"], seen
    assert seen["mlflow"] > resumed["resumed_from_epoch"], seen
    assert resumed["mlflow"]["run_id"] == seen["run_id"]
    run = mlflow_client.get_run(seen["run_id"])
    assert run.data.tags["kerasyard.attempt"] == "2"
    assert run.data.tags["kerasyard.resumed_from_epoch"] == str(resumed["resumed_from_epoch"])
    with session_scope(rsettings.database_url) as s:
        assert s.get(Checkpoint, resumed["id"]) is None


def cut_and_uncut_jobs(rsettings, rclient, rworker, mlflow_client, spec: dict):
    cut = submit(rclient, spec)
    uncut = submit(rclient, {**spec, "name": spec["name"] + "-uncut"})
    seen = kill_after_a_checkpoint(rsettings, rclient, mlflow_client, cut)
    got = wait_ended(rclient, rworker, [cut, uncut])
    assert got[uncut]["status"] == "succeeded", got[uncut]["error"]
    assert got[uncut]["resumed_from_epoch"] is None
    assert_resumed(rsettings, mlflow_client, got[cut], seen)
    return got[cut], got[uncut]


def test_a_killed_plain_job_resumes_from_its_checkpoint_and_ends_as_an_uncut_one(
        rsettings, rclient, rworker, mlflow_client):
    resumed, uncut = cut_and_uncut_jobs(rsettings, rclient, rworker, mlflow_client,
                                        fast_spec("resume-plain"))
    assert_equal_trainings(rclient, mlflow_client, resumed, uncut)


def test_a_killed_job_with_dropout_resumes_exactly(rsettings, rclient, rworker, mlflow_client):
    spec = fast_spec("resume-dropout", dropout=0.3)
    spec["compile"]["optimizer"] = {"name": "adam", "learning_rate": 0.01}
    resumed, uncut = cut_and_uncut_jobs(rsettings, rclient, rworker, mlflow_client, spec)
    assert_equal_trainings(rclient, mlflow_client, resumed, uncut)


# --- sweeps: a pack, and a training that carries a shorter trial ---------------------------


def sweep_body(name: str, parameters: dict) -> dict:
    return {"name": name, "base": fast_spec("base"), "method": "grid",
            "parameters": parameters, "objective": {"metric": "val_loss", "goal": "minimize"},
            "max_parallel": 2}


def the_training(client, sweep_id: str) -> dict:
    """The sweep's one training (the job its other trials are recorded from), once running."""
    def running():
        jobs = client.get(f"/api/v1/jobs?sweep_id={sweep_id}&limit=50").get_json()["jobs"]
        trainers = [j for j in jobs if j["trained_by"] is None and j["status"] == "running"]
        return trainers[0] if trainers else None

    return wait_for(running, TIMEOUT_S, 0.03, f"sweep {sweep_id}'s training to run")


def trials_by_name(client, sweep_id: str) -> dict[str, dict]:
    def ended():
        sw = client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
        return sw if sw["status"] not in ("queued", "running") else None

    sw = wait_for(ended, TIMEOUT_S, 0.2, f"sweep {sweep_id} to end")
    return {t["name"]: job(client, t["jobs"][0]["id"]) for t in sw["trials"]}


def cut_and_uncut_sweeps(rsettings, rclient, mlflow_client, parameters: dict, after: int):
    """The same sweep twice; the first's training killed after a checkpoint at ``after``
    or later. Returns both sweeps' trials by name, and the killed training's job id."""
    ids = [rclient.post("/api/v1/sweeps", json=sweep_body(name, parameters)).get_json()["id"]
           for name in ("resume-sweep", "resume-sweep-uncut")]
    training = the_training(rclient, ids[0])
    seen = kill_after_a_checkpoint(rsettings, rclient, mlflow_client, training["id"], after)
    cut, uncut = (trials_by_name(rclient, i) for i in ids)
    assert set(cut) == set(uncut) and len(cut) == 2, (cut, uncut)
    resumed = next(j for j in cut.values() if j["id"] == training["id"])
    assert_resumed(rsettings, mlflow_client, resumed, seen)
    for name, j in cut.items():
        assert j["status"] == uncut[name]["status"] == "succeeded", (name, j["error"])
        assert j["trained_by"] in (None, training["id"])
    return cut, uncut


def test_a_killed_pack_resumes_as_a_whole(rsettings, rclient, rworker, mlflow_client):
    cut, uncut = cut_and_uncut_sweeps(rsettings, rclient, mlflow_client,
                                      {"model.hidden_activation": ["relu", "tanh"]}, 100)
    for name in cut:
        assert_equal_trainings(rclient, mlflow_client, cut[name], uncut[name])


def test_a_killed_training_resumes_with_the_shorter_trial_it_carries(
        rsettings, rclient, rworker, mlflow_client):
    """Killed after a checkpoint past the carried trial's 300 epochs: its model at epoch 300
    comes back from the checkpoint. The training goes on to 3,000 epochs, so that a moment to
    kill comes after epoch 300 even where a busy machine spaces the checkpoints out (each is
    due no sooner than 50 times the last one's duration)."""
    cut, uncut = cut_and_uncut_sweeps(rsettings, rclient, mlflow_client,
                                      {"fit.epochs": [300, 3 * EPOCHS]}, 301)
    for name in cut:
        assert_equal_trainings(rclient, mlflow_client, cut[name], uncut[name])
