"""Sweeps end to end: PostgreSQL, Redis, a Celery worker process, an MLflow server, Optuna's
study in the service's database."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import signal

import optuna
import pytest
import redis

from devstack import WorkerProcess, worker_env
from service.config import Settings
from tests.helpers import ROOT, ended_run, tiny_spec, wait_for

pytestmark = pytest.mark.integration

TERMINAL = {"succeeded", "failed", "cancelled"}


def wait_sweep(client, sweep_id: str, timeout: float = 240) -> dict:
    def done():
        sw = client.get(f"/api/v1/sweeps/{sweep_id}").get_json()
        return sw if sw["status"] in TERMINAL and (sw["report"] or {}).get("state") in (
            "done", "failed") else None

    return wait_for(done, timeout, 0.3, f"sweep {sweep_id} to end and write its report")


def sweep_jobs(client, sweep_id: str) -> list[dict]:
    return client.get(f"/api/v1/jobs?sweep_id={sweep_id}&limit=500").get_json()["jobs"]


def assert_max_parallel(jobs: list[dict], limit: int) -> int:
    """From the timestamps: at no instant were more than ``limit`` trainings running."""
    events = []
    for j in jobs:
        if j["started_at"] and j["finished_at"] and not j.get("trained_by"):
            events.append((dt.datetime.fromisoformat(j["started_at"]), 1))
            events.append((dt.datetime.fromisoformat(j["finished_at"]), -1))
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts on ties
        running += delta
        peak = max(peak, running)
    assert peak <= limit, f"{peak} trainings overlapped; max_parallel is {limit}"
    return peak


def tiny_sweep(name: str, parameters: dict, **extra) -> dict:
    base = tiny_spec(name="base", epochs=4)
    base["fit"]["validation_split"] = 0.25
    return {"name": name, "base": base, "method": "grid", "parameters": parameters,
            "objective": {"metric": "val_loss", "goal": "minimize"}, "max_parallel": 2,
            **extra}


# --- validation --------------------------------------------------------------------------------


def test_invalid_sweeps_name_the_field_value_and_fix(client):
    lecture = json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())
    cases = [
        ({"parameters": {**lecture["parameters"], "fit.batch_size": [5, 500]}},
         "parameters.fit.batch_size", "500 is larger than the 200 training samples"),
        ({"parameters": {"fit.epoch": [1, 2]}}, "parameters.fit.epoch", "not a field"),
        ({"method": "tpe"}, "max_trials", "set it"),
        ({"parameters": {"fit.epochs": {"type": "int", "low": 1, "high": 5}}},
         "parameters.fit.epochs", "a grid needs explicit values"),
        ({"objective": {"metric": "val_auc"}}, "objective.metric", "not logged"),
        ({"parameters": {"model.hidden_activation": ["relu", "sigmod"]}},
         "parameters.model.hidden_activation", "'sigmod' is not an activation"),
        ({"method": "bayes"}, "method", "expected one of"),
        ({"base": {**lecture["base"], "fit": {"epochs": 0}}}, "base.fit.epochs", "out of range"),
    ]
    def stored() -> set[str]:
        return {s["id"] for s in client.get("/api/v1/sweeps?limit=500").get_json()["sweeps"]}

    before = stored()
    for change, loc, text in cases:
        body = {**copy.deepcopy(lecture), **change}
        resp = client.post("/api/v1/sweeps", json=body)
        assert resp.status_code == 422, (change, resp.get_json())
        err = resp.get_json()["error"]
        assert err["code"] == "invalid_spec"
        assert err["message"].startswith("the sweep spec is invalid")
        hit = [d for d in err["details"] if d["loc"] == loc]
        assert hit and text in hit[0]["msg"], (loc, err["details"])
    assert stored() == before  # nothing stored for an invalid sweep


def test_lecture_grid_expands_exactly_and_cancels(client, settings):
    """The lecture sweep: 4 batch sizes x 3 activations x 3 epoch counts = 36 trials of 3
    seeds each, the epochs axis trained once per configuration and seed, the three activations
    of a batch size packed into one training per seed; cancel ends it."""
    lecture = json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())
    assert lecture["repeats"] == 3
    # Room for two packs of 3 seeds each (max_parallel counts trainings).
    resp = client.post("/api/v1/sweeps", json={**lecture, "max_parallel": 6})
    assert resp.status_code == 202, resp.get_json()
    sw = resp.get_json()
    assert sw["progress"]["total"] == 36
    assert sw["share_epochs"]["on"] is True
    assert sw["pack"]["on"] is True and sw["pack"]["trainings"] == 4
    assert sw["pack"]["why"].startswith("12 towers in 4 trainings")
    trials = sw["trials"]
    assert [t["number"] for t in trials] == list(range(36))
    expected = [(bs, act, ep) for bs in (1, 5, 40, 200) for act in ("sigmoid", "relu", "tanh")
                for ep in (10, 50, 200)]
    got = [(t["params"]["fit.batch_size"], t["params"]["model.hidden_activation"],
            t["params"]["fit.epochs"]) for t in trials]
    assert got == expected
    assert trials[4]["name"] == "bs=1 act=relu ep=50"
    # max_parallel 6 trainings: two batch sizes, each a pack of three activations with their
    # three epoch counts, trained once per seed.
    created = [t for t in trials if t["state"] != "pending"]
    assert len(created) == 18
    assert all([j["seed"] for j in t["jobs"]] == [0, 1, 2] for t in created)
    trainers = [t for t in created if t["trained_by"] is None]
    assert sorted(t["params"]["fit.epochs"] for t in trainers) == [200, 200]
    for trainer in trainers:
        carried = [t for t in created if t["trained_by"] == trainer["jobs"][0]["id"]]
        assert len(carried) == 8
        assert {t["params"]["fit.batch_size"] for t in carried} == \
            {trainer["params"]["fit.batch_size"]}
    for t in created:
        job = client.get(f"/api/v1/jobs/{t['jobs'][0]['id']}").get_json()
        assert job["spec"]["fit"]["batch_size"] == t["params"]["fit.batch_size"]
        assert job["spec"]["fit"]["epochs"] == t["params"]["fit.epochs"]
        acts = [la["activation"] for la in job["spec"]["model"]["layers"]]
        assert acts == [t["params"]["model.hidden_activation"]] * 2 + ["softmax"]
        assert job["sweep_id"] == sw["id"]
    study = optuna.load_study(study_name=f"kerasyard-sweep-{sw['id']}",
                              storage=settings.database_url)
    assert len(study.trials) == 18
    assert {tuple(sorted(t.params.items())) for t in study.trials} == {
        tuple(sorted(t["params"].items())) for t in created}

    resp = client.post(f"/api/v1/sweeps/{sw['id']}/cancel")
    assert resp.status_code == 202
    # Queued trials end at once; one a worker already took (when the session's worker runs)
    # ends at its next epoch boundary.
    sw = wait_for(lambda: (lambda s: s if s["status"] != "running" else None)(
        client.get(f"/api/v1/sweeps/{sw['id']}").get_json()), 60, 0.2, "the sweep to cancel")
    assert sw["status"] == "cancelled"
    assert {j["status"] for j in sweep_jobs(client, sw["id"])} == {"cancelled"}
    assert client.post(f"/api/v1/sweeps/{sw['id']}/cancel").status_code == 409
    listed = client.get("/api/v1/sweeps?status=cancelled").get_json()["sweeps"]
    assert sw["id"] in [s["id"] for s in listed]


# --- running sweeps ----------------------------------------------------------------------------


def test_cancel_stops_running_and_queued_trials(client, worker, mlflow_client):
    body = tiny_sweep("cancel", {"model.hidden_activation": ["relu", "tanh", "sigmoid"]},
                      max_parallel=1)
    body["base"]["fit"]["epochs"] = 5000
    sw = client.post("/api/v1/sweeps", json=body).get_json()

    def training():
        s = client.get(f"/api/v1/sweeps/{sw['id']}").get_json()
        running = [t for t in s["trials"] if t["state"] == "running"]
        return running[0] if running and (running[0]["jobs"][0]["epoch"] or 0) > 0 else None

    running = wait_for(training, 120, 0.1, "a trial to be training")
    assert client.post(f"/api/v1/sweeps/{sw['id']}/cancel").status_code == 202
    sw = wait_sweep(client, sw["id"], timeout=60)
    assert sw["status"] == "cancelled"
    assert {t["state"] for t in sw["trials"]} == {"cancelled"}
    job = client.get(f"/api/v1/jobs/{running['jobs'][0]['id']}").get_json()
    assert job["status"] == "cancelled" and job["summary"]["epochs_completed"] < 5000
    assert ended_run(mlflow_client, job["mlflow"]["run_id"]).info.status == "KILLED"
    assert ended_run(mlflow_client, sw["mlflow"]["run_id"]).info.status == "KILLED"


def test_grid_sweep_parent_child_runs_report_and_shared_epochs(client, worker, mlflow_client,
                                                               settings):
    body = tiny_sweep("grid-share", {"model.hidden_activation": ["relu", "tanh"],
                                     "fit.epochs": [2, 4]}, pack=False)
    sw = client.post("/api/v1/sweeps", json=body).get_json()
    sw = wait_sweep(client, sw["id"])
    assert sw["status"] == "succeeded", sw
    assert sw["progress"] == {**sw["progress"], "done": 4, "total": 4}
    trials = {t["name"]: t for t in sw["trials"]}
    assert set(trials) == {"act=relu ep=2", "act=relu ep=4", "act=tanh ep=2", "act=tanh ep=4"}
    assert all(t["state"] == "succeeded" and t["objective"] is not None for t in trials.values())
    # Each ep=2 trial was recorded from its ep=4 sibling's training.
    for act in ("relu", "tanh"):
        trainer = trials[f"act={act} ep=4"]["jobs"][0]["id"]
        assert trials[f"act={act} ep=2"]["trained_by"] == trainer
        assert trials[f"act={act} ep=4"]["trained_by"] is None
    best = min(trials.values(), key=lambda t: t["objective"])
    assert sw["best"]["name"] == best["name"]
    jobs = sweep_jobs(client, sw["id"])
    assert len(jobs) == 4
    assert_max_parallel(jobs, 2)

    # Identical to training it separately with the same seed.
    derived = trials["act=tanh ep=2"]["jobs"][0]["id"]
    alone_spec = client.get(f"/api/v1/jobs/{derived}").get_json()["spec"]
    alone_spec["name"] = "alone"
    alone = client.post("/api/v1/jobs", json=alone_spec).get_json()
    from .conftest import wait_terminal

    assert wait_terminal(client, alone["id"])["status"] == "succeeded"
    h_derived = client.get(f"/api/v1/jobs/{derived}/history").get_json()["epochs"]
    h_alone = client.get(f"/api/v1/jobs/{alone['id']}/history").get_json()["epochs"]
    strip = lambda h: [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in h]
    assert len(h_derived) == 2
    assert strip(h_derived) == strip(h_alone)
    # By default a trial scores its last epoch (objective.at "last").
    assert sw["spec"]["objective"]["at"] == "last"
    assert trials["act=tanh ep=2"]["objective"] == pytest.approx(h_derived[-1]["val_loss"])
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    run_of = lambda job_id: client.get(f"/api/v1/jobs/{job_id}").get_json()["mlflow"]["run_id"]
    w_derived = mlflow.keras.load_model(f"runs:/{run_of(derived)}/model").get_weights()
    w_alone = mlflow.keras.load_model(f"runs:/{run_of(alone['id'])}/model").get_weights()
    assert len(w_derived) == len(w_alone)
    for a, b in zip(w_derived, w_alone):
        np.testing.assert_array_equal(a, b)

    # MLflow: a parent run with the report; one nested child per trial.
    parent = ended_run(mlflow_client, sw["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kerasyard.best_trial"] == best["name"]
    assert parent.data.metrics["best_objective"] == pytest.approx(best["objective"])
    assert parent.data.params["best.model.hidden_activation"] == \
        best["params"]["model.hidden_activation"]
    names = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "runs.csv", "best_trial.json", "report.html", "overview.png",
            "importance.png", "objective_by_factor.png", "curves.png"} <= names
    assert set(parent.data.metrics) >= {"importance.act", "importance.ep"}
    children = mlflow_client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(trials)
    for run in children:
        steps = [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == list(range(1, int(run.info.run_name[-1]) + 1))
        assert run.info.status == "FINISHED"
        # Trained or recorded from a longer training alike.
        assert {"best_epoch", "best_val_loss", "chance_loss", "chance_accuracy",
                "fit_time_s"} <= set(run.data.metrics), run.info.run_name
        child_artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
        assert {"history.csv", "learning_curve.svg", "spec.json"} <= child_artifacts
    csv_path = mlflow_client.download_artifacts(parent.info.run_id, "trials.csv",
                                                str(settings.data_dir))
    rows = open(csv_path).read().splitlines()
    assert len(rows) == 5 and rows[0].startswith("trial,name,model.hidden_activation,fit.epochs")


@pytest.mark.parametrize("method", ["tpe", "random"])
def test_sampled_sweep_finishes_with_a_best_trial(client, worker, settings, method):
    body = tiny_sweep(method, {"compile.optimizer.learning_rate":
                               {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
                               "model.layers.0.units": {"type": "int", "low": 2, "high": 8}},
                      method=method, max_trials=5, max_parallel=2, seed=3)
    sw = client.post("/api/v1/sweeps", json=body).get_json()
    sw = wait_sweep(client, sw["id"])
    assert sw["status"] == "succeeded", sw
    assert sw["report"]["state"] == "done", sw["report"]  # the report handles this shape
    assert len(sw["trials"]) == 5 and {t["state"] for t in sw["trials"]} == {"succeeded"}
    assert sw["best"] is not None
    assert sw["best"]["objective"] == min(t["objective"] for t in sw["trials"])
    for t in sw["trials"]:
        assert 1e-3 <= t["params"]["compile.optimizer.learning_rate"] <= 0.3
        assert 2 <= t["params"]["model.layers.0.units"] <= 8
        job = client.get(f"/api/v1/jobs/{t['jobs'][0]['id']}").get_json()
        assert job["spec"]["model"]["layers"][0]["units"] == t["params"]["model.layers.0.units"]
    assert len({t["params"]["compile.optimizer.learning_rate"] for t in sw["trials"]}) == 5
    study = optuna.load_study(study_name=f"kerasyard-sweep-{sw['id']}",
                              storage=settings.database_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    sampler = {"tpe": "TPESampler", "random": "RandomSampler"}[method]
    from service.sweeps.studies import sampler as sampler_for

    assert type(sampler_for(sw["spec"])).__name__ == sampler
    assert study.best_value == pytest.approx(sw["best"]["objective"])
    assert_max_parallel(sweep_jobs(client, sw["id"]), 2)


@pytest.mark.parametrize("pruner", [{"type": "median", "n_startup_trials": 1,
                                     "n_warmup_steps": 5},
                                    {"type": "asha", "min_resource": 5, "reduction_factor": 2}])
def test_hopeless_trial_is_pruned(client, worker, mlflow_client, pruner):
    """A good learning rate finishes first (max_parallel 1); a learning rate of 1e-7 cannot
    learn, falls behind at once, and its pruner stops it."""
    body = tiny_sweep(f"prune-{pruner['type']}",
                      {"compile.optimizer.learning_rate": [0.05, 1e-7]},
                      max_parallel=1, early_stopping=pruner, pack=False)
    body["base"]["fit"]["epochs"] = 400
    sw = client.post("/api/v1/sweeps", json=body).get_json()
    sw = wait_sweep(client, sw["id"])
    good, hopeless = sw["trials"]
    assert good["state"] == "succeeded", good
    assert hopeless["state"] == "pruned", hopeless
    assert sw["status"] == "succeeded" and sw["best"]["number"] == good["number"]
    assert sw["report"]["state"] == "done", sw["report"]  # the report handles this shape
    job = client.get(f"/api/v1/jobs/{hopeless['jobs'][0]['id']}").get_json()
    assert job["status"] == "pruned"
    assert job["summary"]["pruned_at_epoch"] < 400
    run = ended_run(mlflow_client, job["mlflow"]["run_id"])
    assert run.data.tags["kerasyard.pruned"] == "true"
    assert run.data.tags["kerasyard.trial_state"] == "pruned"


def test_repeats_best_mean_runner_up_noise_and_every_trial_equal_in_mlflow(client, worker,
                                                                          mlflow_client):
    """Two activations x two epoch counts, two seeds each, scored at each trial's best epoch:
    one packed training per seed carries the three other trials. ``best`` is the best mean
    over seeds, with its runner-up and whether the gap clears Welch's t-test; every trial's
    run, carried or trained, logs its best epoch, chance levels and its own fit time, and each
    spec field and swept factor once."""
    from scipy import stats

    body = tiny_sweep("repeats", {"model.hidden_activation": ["sigmoid", "relu"],
                                  "fit.epochs": [2, 4]}, repeats=2, max_parallel=2,
                      objective={"metric": "val_loss", "goal": "minimize", "at": "best"})
    sw = client.post("/api/v1/sweeps", json=body).get_json()
    sw = wait_sweep(client, sw["id"])
    assert sw["status"] == "succeeded"
    assert sw["report"]["state"] == "done", sw["report"]  # the report handles this shape
    assert sw["objective"]["at"] == "best" and sw["spec"]["objective"]["at"] == "best"
    jobs = {j["id"]: j for j in sweep_jobs(client, sw["id"])}
    assert len(jobs) == 8 and sum(not j["trained_by"] for j in jobs.values()) == 2
    assert_max_parallel(list(jobs.values()), 2)
    for t in sw["trials"]:
        assert [j["seed"] for j in t["jobs"]] == [0, 1]
        assert len(t["objective_values"]) == 2
        assert t["objective"] == pytest.approx(sum(t["objective_values"]) / 2)
        assert t["objective_std"] is not None and t["objective_std"] > 0
        for tj in t["jobs"]:
            _check_trial_run(client, mlflow_client, jobs[tj["id"]], t, tj)
    # The best is the best mean; the runner-up the next; clear by Welch's t-test at 5 %.
    ranked = sorted(sw["trials"], key=lambda t: (t["objective"], t["number"]))
    best, second = ranked[0], ranked[1]
    assert {k: sw["best"][k] for k in ("number", "name", "params", "objective", "n_seeds")} == \
        {"number": best["number"], "name": best["name"], "params": best["params"],
         "objective": best["objective"], "n_seeds": 2}
    assert sw["best"]["runner_up"] == {
        "number": second["number"], "name": second["name"], "params": second["params"],
        "objective": second["objective"], "objective_std": second["objective_std"],
        "n_seeds": 2}
    a, b = best["objective_values"], second["objective_values"]
    se2 = stats.tvar(a) / 2 + stats.tvar(b) / 2
    df = se2 ** 2 / ((stats.tvar(a) / 2) ** 2 + (stats.tvar(b) / 2) ** 2)
    threshold = stats.t.ppf(0.975, int(df)) * se2 ** 0.5
    gap = second["objective"] - best["objective"]
    assert abs(gap - threshold) > 1e-9  # not on the edge, where rounding could decide
    assert sw["best"]["clear"] is bool(gap > threshold)


def _check_trial_run(client, mlflow_client, job: dict, trial: dict, tj: dict) -> None:
    """One seed of a trial: its best epoch (the objective, at "best"), its chance levels and
    fit time in MLflow as in its summary; its params each once."""
    history = client.get(f"/api/v1/jobs/{job['id']}/history").get_json()["epochs"]
    val = [e["val_loss"] for e in history]
    summary = job["summary"]
    assert summary["best_epoch"]["metric"] == "val_loss"
    assert summary["best_epoch"]["epoch"] == val.index(min(val)) + 1
    assert tj["objective"] == pytest.approx(min(val))  # at its best epoch, not its last
    run = ended_run(mlflow_client, job["mlflow"]["run_id"])
    m = run.data.metrics
    assert m["best_epoch"] == summary["best_epoch"]["epoch"], job["name"]
    assert m["best_val_loss"] == pytest.approx(min(val))
    assert m["chance_loss"] == pytest.approx(summary["chance"]["loss"])
    assert m["chance_loss"] == pytest.approx(0.693147, abs=1e-5)  # ln 2: two classes
    assert 0.5 <= m["chance_accuracy"] < 1 and m["chance_accuracy"] == \
        pytest.approx(summary["chance"]["accuracy"])
    assert m["fit_time_s"] == pytest.approx(summary["fit_time_s"])
    # Its share of the training: half of each of its epochs (two towers trained in each).
    assert m["fit_time_s"] == pytest.approx(sum(e["epoch_time_s"] for e in history) / 2,
                                            abs=2e-3)
    params = run.data.params
    assert params["model.hidden_activation"] == trial["params"]["model.hidden_activation"]
    assert params["model.layers.0.activation"] == trial["params"]["model.hidden_activation"]
    assert params["fit.epochs"] == str(trial["params"]["fit.epochs"])
    assert not {"batch_size", "epochs"} & set(params)


def test_restart_in_the_middle_loses_and_duplicates_nothing(settings, workdir):
    """Kill the worker (parent and child, SIGKILL) mid-sweep and drop the API; a new API and
    a new worker finish the sweep with each trial exactly once."""
    import dataclasses

    from service.api import create_app

    # A broker of its own (the next Redis database), so the session's worker cannot take
    # these trials.
    base, db = settings.broker_url.rsplit("/", 1)
    broker = f"{base}/{(int(db) + 1) % 16}"
    redis.Redis.from_url(broker).flushdb()
    st: Settings = dataclasses.replace(settings, stale_heartbeat_s=3, broker_url=broker)
    api = create_app(st).test_client()
    body = tiny_sweep("restart", {"model.hidden_activation": ["relu", "tanh", "sigmoid"],
                                  "compile.optimizer.learning_rate": [0.05, 0.01]},
                      max_parallel=1, pack=False)
    body["base"]["fit"]["epochs"] = 150
    w1 = WorkerProcess(worker_env(st), workdir / "restart-worker1.log")
    w1.wait_ready()
    sw = api.post("/api/v1/sweeps", json=body).get_json()
    assert sw["progress"]["total"] == 6

    def two_done():
        s = api.get(f"/api/v1/sweeps/{sw['id']}").get_json()
        return s["progress"]["done"] >= 2 and s["progress"]["running"] >= 1
    wait_for(two_done, 180, 0.1, "two trials done and a third running")
    _kill_tree(w1.proc.pid)
    w1.stop()
    api = None  # the API goes too; a new one starts with its background round

    app2 = create_app(st, redispatch_interval=1)
    api2 = app2.test_client()
    w2 = WorkerProcess(worker_env(st), workdir / "restart-worker2.log")
    try:
        w2.wait_ready()
        final = wait_sweep(api2, sw["id"], timeout=300)
    finally:
        app2.extensions["kerasyard.background"].stopped.set()
        w2.stop()
    assert final["status"] == "succeeded", final
    jobs = sweep_jobs(api2, sw["id"])
    assert sorted(j["trial_number"] for j in jobs) == list(range(6))
    numbers = sorted(t["number"] for t in final["trials"])
    assert numbers == list(range(6))
    assert all(len(t["jobs"]) == 1 and t["state"] == "succeeded" for t in final["trials"])
    assert {tuple(sorted(t["params"].items())) for t in final["trials"]} == {
        (("compile.optimizer.learning_rate", lr), ("model.hidden_activation", a))
        for a in ("relu", "tanh", "sigmoid") for lr in (0.05, 0.01)}
    assert max(j["attempts"] for j in jobs) == 2  # the one killed mid-training, retried
    study = optuna.load_study(study_name=f"kerasyard-sweep-{sw['id']}",
                              storage=st.database_url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 6
    assert optuna.trial.TrialState.RUNNING not in states
    assert_max_parallel(jobs, 1)


def _kill_tree(pid: int) -> None:
    """SIGKILL a worker and its prefork children: nothing gets to clean up."""
    import subprocess

    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for child in children.split():
        os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def test_a_trial_that_ends_after_the_scheduler_looked_is_told_to_optuna(idle_client,
                                                                        idle_settings):
    """The race seen in a CI run: _advance tells Optuna from the rows it read when it began;
    the last trial ends after that read, and _maybe_finish (which reads the rows again) ended
    the sweep with that trial still RUNNING in the study. Here the trial ends between the two,
    and the sweep must not end before Optuna is told."""
    from service.store.db import session_scope
    from service.store.models import Job, JobStatus, Sweep
    from service.sweeps import scheduler, studies

    sweep = tiny_sweep("late trial", {"fit.batch_size": [4]}, pack=False)
    resp = idle_client.post("/api/v1/sweeps", json=sweep)
    assert resp.status_code == 202, resp.get_json()
    sw = resp.get_json()
    [job_id] = [j["id"] for j in sweep_jobs(idle_client, sw["id"])]
    url = idle_settings.database_url
    with session_scope(url) as s:  # the worker's end of the trial, as the rows show it
        job = s.get(Job, job_id)
        job.status = JobStatus.succeeded
        job.summary = {"final_metrics": {"loss": 0.5, "val_loss": 0.75}}
        row = s.get(Sweep, sw["id"])
        spec, study_name = row.spec, row.study_name
    study = studies.load_study(url, study_name, spec)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING]

    scheduler._maybe_finish(idle_settings, sw["id"], scheduler_sender(), study)

    trials = studies.load_study(url, study_name, spec).get_trials()
    assert [(t.state, t.value) for t in trials] == [(optuna.trial.TrialState.COMPLETE, 0.75)]
    got = idle_client.get(f"/api/v1/sweeps/{sw['id']}").get_json()
    assert got["status"] == "succeeded"
    assert got["best"]["objective"] == 0.75


def scheduler_sender():
    """A Sender that sends nothing (the sweep's report is not what this test looks at)."""

    class Quiet:
        def train(self, job_id: str, queue: str) -> bool:
            return True

        def report(self, sweep_id: str) -> bool:
            return True

    return Quiet()
