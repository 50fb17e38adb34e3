"""Packed sweep trials end to end (PostgreSQL, Redis, a Celery worker process, MLflow): each
tower recorded as its own trial, equal to training it unpacked; a diverging and a pruned tower
end alone."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import pytest

from tests.helpers import ended_run, wait_for

from .test_sweeps import sweep_jobs, tiny_sweep, wait_sweep

pytestmark = pytest.mark.integration


def _run(client, body) -> dict:
    sw = client.post("/api/v1/sweeps", json=body).get_json()
    return wait_sweep(client, sw["id"])


def test_a_pack_records_each_trial_as_its_own_job_run_and_model(client, worker, mlflow_client,
                                                                settings):
    params = {"model.hidden_activation": ["relu", "tanh", "sigmoid"], "fit.epochs": [2, 4]}
    packed = _run(client, tiny_sweep("packed", params))
    unpacked = _run(client, tiny_sweep("unpacked", params, pack=False))
    assert packed["status"] == unpacked["status"] == "succeeded", (packed, unpacked)
    assert packed["pack"] == {"on": True, "trainings": 1, "why": packed["pack"]["why"]}
    assert packed["pack"]["why"].startswith("3 towers in 1 trainings")
    assert unpacked["pack"] == {"on": False, "why": "pack is false", "trainings": None}

    trials = {t["name"]: t for t in packed["trials"]}
    assert len(trials) == 6 and {t["state"] for t in trials.values()} == {"succeeded"}
    trainer = trials["act=relu ep=4"]
    assert trainer["trained_by"] is None
    assert {t["trained_by"] for n, t in trials.items() if n != trainer["name"]} == \
        {trainer["jobs"][0]["id"]}
    # Unpacked: three trainings, each carrying only its own shorter epoch count.
    assert sum(t["trained_by"] is None for t in unpacked["trials"]) == 3
    assert len(sweep_jobs(client, packed["id"])) == 6

    # Every objective and every epoch's metrics equal the unpacked sweep's, bit for bit.
    alone = {t["name"]: t for t in unpacked["trials"]}
    strip = lambda h: [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in h]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    for name, t in trials.items():
        assert t["objective"] == alone[name]["objective"], name
        job_id, alone_id = t["jobs"][0]["id"], alone[name]["jobs"][0]["id"]
        h = client.get(f"/api/v1/jobs/{job_id}/history").get_json()["epochs"]
        h_alone = client.get(f"/api/v1/jobs/{alone_id}/history").get_json()["epochs"]
        assert len(h) == t["params"]["fit.epochs"]
        assert strip(h) == strip(h_alone), name
        # Its own MLflow child run: the trial's own metric names, its params, its model.
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        run = ended_run(mlflow_client, job["mlflow"]["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == packed["mlflow"]["run_id"]
        assert run.data.tags["kerasyard.trial"] == name
        assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(run.data.metrics)
        assert not any(k.startswith(("t0/", "t1/", "t2/", "val_t")) for k in run.data.metrics)
        assert run.data.params["model.layers.0.activation"] == \
            t["params"]["model.hidden_activation"]
        steps = [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == list(range(1, t["params"]["fit.epochs"] + 1))
        files = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
        assert {"history.csv", "learning_curve.svg", "spec.json"} <= files
        # What it trained on, the same datasets (name, digest) packed or not, carried or not.
        alone_run = client.get(f"/api/v1/jobs/{alone_id}").get_json()["mlflow"]["run_id"]
        data_of = lambda r: sorted((t.value, i.dataset.name, i.dataset.digest)
                                   for i in r.inputs.dataset_inputs for t in i.tags)
        assert [c for c, _, _ in data_of(run)] == ["training", "validation"], name
        assert data_of(run) == data_of(mlflow_client.get_run(alone_run)), name
        model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
        model_alone = mlflow.keras.load_model(f"runs:/{alone_run}/model")
        assert len(model.layers) == len(model_alone.layers) == 2  # the tower alone
        for a, b in zip(model.get_weights(), model_alone.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        x = np.array([[0.5, -1.0], [2.0, 0.1]], dtype="float32")
        np.testing.assert_array_equal(model.predict(x, verbose=0),
                                      model_alone.predict(x, verbose=0))


def test_a_diverging_and_a_pruned_tower_end_alone(client, worker, mlflow_client):
    """One pack of three learning rates: 1e12 diverges at once, 1e-7 cannot learn and ASHA
    prunes it at its first rung; the good one trains on to the end."""
    body = tiny_sweep("pack-trouble", {"compile.optimizer.learning_rate": [0.5, 1e12, 1e-7]},
                      early_stopping={"type": "asha", "min_resource": 5,
                                      "reduction_factor": 2})
    body["base"]["compile"]["optimizer"] = {"name": "sgd", "learning_rate": 0.5}
    body["base"]["fit"]["epochs"] = 40
    sw = _run(client, body)
    assert sw["pack"]["on"] is True and sw["pack"]["trainings"] == 1, sw["pack"]
    good, wild, hopeless = sw["trials"]
    assert good["state"] == "succeeded", good
    assert wild["state"] == "failed", wild
    assert "diverged" in wild["jobs"][0]["error"]
    assert "learning rate 1e+12" in wild["jobs"][0]["error"]
    assert hopeless["state"] == "pruned", hopeless
    assert sw["status"] == "succeeded" and sw["best"]["number"] == good["number"]
    assert wild["trained_by"] == hopeless["trained_by"] == good["jobs"][0]["id"]
    g = client.get(f"/api/v1/jobs/{good['jobs'][0]['id']}").get_json()
    assert g["summary"]["epochs_completed"] == 40
    p = client.get(f"/api/v1/jobs/{hopeless['jobs'][0]['id']}").get_json()
    assert p["status"] == "pruned" and p["summary"]["pruned_at_epoch"] < 40
    h = client.get(f"/api/v1/jobs/{p['id']}/history").get_json()["epochs"]
    assert len(h) == p["summary"]["pruned_at_epoch"]
    run = ended_run(mlflow_client, p["mlflow"]["run_id"])
    assert run.data.tags["kerasyard.pruned"] == "true"
    assert run.data.tags["kerasyard.trial_state"] == "pruned"


def test_cancelling_one_carried_trial_takes_its_tower_out_and_the_others_train_on(client,
                                                                                 worker):
    """POST /jobs/{id}/cancel on a trial a pack carries: its tower leaves the pack at an
    epoch's end (its live progress stops), the other towers train on; the trial ends
    cancelled, saying so, when the pack ends (here: the sweep is cancelled after)."""
    params = {"model.hidden_activation": ["relu", "tanh", "sigmoid"], "fit.epochs": [10_000]}
    sw = client.post("/api/v1/sweeps", json=tiny_sweep("pack-cancel", params)).get_json()

    def trials():
        got = client.get(f"/api/v1/sweeps/{sw['id']}").get_json()["trials"]
        return {t["params"]["model.hidden_activation"]: t for t in got}

    def epoch(job_id: str) -> int:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        return (job["progress"] or {}).get("epoch", 0)

    ids = wait_for(lambda: (t := trials()) and all(x["jobs"] for x in t.values()) and
                   {a: x["jobs"][0]["id"] for a, x in t.items()}, 60, what="the trials' jobs")
    wait_for(lambda: epoch(ids["tanh"]) >= 2, 120, what="the tanh tower's live progress")
    assert client.post(f"/api/v1/jobs/{ids['tanh']}/cancel").status_code == 202

    def tanh_left():  # its progress stands still while sigmoid's goes on
        before = epoch(ids["tanh"]), epoch(ids["sigmoid"])
        time.sleep(2.5)
        after = epoch(ids["tanh"]), epoch(ids["sigmoid"])
        return after if after[0] == before[0] and after[1] > before[1] else None

    stopped_at, sigmoid_at = wait_for(tanh_left, 60, 0, "the tanh tower to leave the pack")
    assert stopped_at < sigmoid_at < 10_000
    assert client.post(f"/api/v1/sweeps/{sw['id']}/cancel").status_code == 202
    ended = wait_sweep(client, sw["id"])
    t = trials()
    assert ended["status"] == "cancelled"
    assert {a: x["state"] for a, x in t.items()} == dict.fromkeys(t, "cancelled")
    tanh = client.get(f"/api/v1/jobs/{ids['tanh']}").get_json()
    assert tanh["trained_by"] == ids["relu"]
    assert "cancelled while its tower trained" in tanh["error"]["message"], tanh["error"]
    assert epoch(ids["tanh"]) == stopped_at


def test_a_pack_whose_worker_dies_is_retried_as_a_pack(settings, workdir):
    """SIGKILL the worker while it trains a pack of six trials; a new worker takes the
    training over and packs the trials not yet recorded: every trial ends succeeded exactly
    once, with one MLflow child run."""
    import dataclasses

    import optuna

    from devstack import RedisServer, WorkerProcess, worker_env
    from service.api import create_app
    from tests.helpers import wait_for

    from .test_sweeps import _kill_tree

    # A redis-server of its own, so the session's worker cannot take these trials.
    (workdir / "pack-restart").mkdir(exist_ok=True)
    broker = RedisServer(workdir / "pack-restart")
    # 6 s: long enough that a loaded 2-core CI box (the other xdist session training beside
    # it) does not make the second worker look silent too; short enough to take over soon.
    st = dataclasses.replace(settings, stale_heartbeat_s=6, broker_url=broker.url)
    app = create_app(st, redispatch_interval=1)
    api = app.test_client()
    body = tiny_sweep("pack-restart", {"model.hidden_activation": ["relu", "tanh", "sigmoid"],
                                       "compile.optimizer.learning_rate": [0.05, 0.01]},
                      max_parallel=1)
    body["base"]["fit"]["epochs"] = 200
    w1 = WorkerProcess(worker_env(st), workdir / "pack-restart-worker1.log")
    w2 = None
    try:
        w1.wait_ready()
        sw = api.post("/api/v1/sweeps", json=body).get_json()
        assert sw["pack"]["trainings"] == 1

        def training():
            s = api.get(f"/api/v1/sweeps/{sw['id']}").get_json()
            return any((j["epoch"] or 0) >= 5 for t in s["trials"] for j in t["jobs"]
                       if t["trained_by"] is None)

        wait_for(training, 180, 0.05, "the pack to be training")
        _kill_tree(w1.proc.pid)
        w1.stop()
        w2 = WorkerProcess(worker_env(st), workdir / "pack-restart-worker2.log")
        w2.wait_ready()
        final = wait_sweep(api, sw["id"], timeout=300)
    finally:
        app.extensions["kerasyard.background"].stopped.set()
        for w in (w1, w2):
            if w is not None:
                w.stop()
        broker.stop()
    assert final["status"] == "succeeded", final
    assert all(len(t["jobs"]) == 1 and t["state"] == "succeeded" for t in final["trials"])
    jobs = sweep_jobs(api, sw["id"])
    assert len(jobs) == 6
    trainer = next(j for j in jobs if not j["trained_by"])
    assert trainer["attempts"] == 2  # killed mid-training, retried
    assert {j["trained_by"] for j in jobs if j["id"] != trainer["id"]} == {trainer["id"]}
    # One child run per trial, each FINISHED; the killed attempt's own run ended apart.
    from mlflow.tracking import MlflowClient

    cl = MlflowClient(st.mlflow_tracking_uri)
    runs = cl.search_runs([final["mlflow"]["experiment_id"]],
                          f"tags.kerasyard.sweep_id = '{sw['id']}'")
    children = [r for r in runs if r.data.tags.get("kerasyard.kind") != "sweep"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["kerasyard.trial"] for r in finished) == \
        sorted(t["name"] for t in final["trials"])
    assert {j["mlflow"]["run_id"] for j in jobs} == {r.info.run_id for r in finished}
    study = optuna.load_study(study_name=f"kerasyard-sweep-{sw['id']}",
                              storage=st.database_url)
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 6
