"""Jobs through the real path: Flask API -> Redis -> Celery worker process -> Keras -> MLflow."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest

from service.store.db import session_scope
from service.store.models import Dataset
from tests.helpers import diverging_spec, ended_run, lecture_spec, tiny_spec, wait_for

from .conftest import wait_terminal

pytestmark = pytest.mark.integration


def submit(client, spec) -> str:
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def test_lecture_mlp_end_to_end(client, worker, mlflow_client):
    epochs = 4
    job_id = submit(client, lecture_spec(epochs=epochs))
    job = wait_terminal(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["epoch"] == epochs and job["progress"]["epochs"] == epochs
    assert job["attempts"] == 1 and job["started_at"] and job["finished_at"]
    run_id = job["mlflow"]["run_id"]
    assert job["mlflow"]["url"].endswith(f"/runs/{run_id}?workflowType=machine_learning")
    # The example holds 50 of its 250 samples out: its metrics say how it generalizes.
    assert job["metrics_on"] == "validation" and job["plan"]["n_val"] == 50

    run = ended_run(mlflow_client, run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    # The lecture's arithmetic: 200 samples / batch 5 = 40 updates an epoch.
    assert params["steps_per_epoch"] == "40"
    assert params["total_updates"] == str(40 * epochs)
    assert params["total_params"] == "5374"
    assert params["input_dim"] == "50" and params["n_train"] == "200"
    assert params["gradient_descent"] == "mini_batch"
    assert params["fit.batch_size"] == "5" and params["model.layers.0.activation"] == "relu"
    # Each spec field once, under its path: no bare batch_size or epochs beside them.
    assert params["fit.epochs"] == str(epochs)
    assert not {"batch_size", "epochs", "n_samples", "n_classes"} & set(params)
    for name in ("loss", "accuracy", "learning_rate", "epoch_time_s"):
        history = mlflow_client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == list(range(1, epochs + 1)), name
    # Its best epoch by the metric it monitors (val_loss: it holds data out), and its fit time.
    val = [m.value for m in sorted(mlflow_client.get_metric_history(run_id, "val_loss"),
                                   key=lambda m: m.step)]
    best = job["summary"]["best_epoch"]
    assert best == {"metric": "val_loss", "goal": "minimize", "epoch": val.index(min(val)) + 1,
                    "value": pytest.approx(min(val))}
    assert run.data.metrics["best_epoch"] == best["epoch"]
    assert run.data.metrics["best_val_loss"] == pytest.approx(min(val))
    assert run.data.metrics["fit_time_s"] == pytest.approx(job["summary"]["fit_time_s"])
    # Beside the metrics, what guessing scores: ln(10) for 10 classes, the majority class's
    # share of the validation set.
    assert run.data.metrics["chance_loss"] == pytest.approx(math.log(10))
    assert job["summary"]["chance"]["loss"] == pytest.approx(math.log(10), abs=1e-6)
    assert 0.1 <= run.data.metrics["chance_accuracy"] < 0.5
    experiment = mlflow_client.get_experiment(job["mlflow"]["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tags = run.data.tags
    assert "mlflow.note.content" not in tags
    assert tags["kerasyard.job_id"] == job_id
    assert tags["kerasyard.keras_backend"] == "tensorflow"
    assert len(tags["kerasyard.dataset_digest"]) == 16
    artifacts = {a.path for a in mlflow_client.list_artifacts(run_id)}
    assert {"spec.json", "model_summary.txt", "history.csv", "learning_curve.svg",
            "confusion_matrix.svg"} <= artifacts

    # The run page's "Datasets": the 200 training and 50 validation rows, each its own digest.
    inputs = {t.value: i.dataset for i in run.inputs.dataset_inputs for t in i.tags
              if t.key == "mlflow.data.context"}
    assert set(inputs) == {"training", "validation"}
    assert {d.name for d in inputs.values()} == {"synthetic:classification"}
    assert json.loads(inputs["training"].profile)["features_shape"] == [200, 50]
    assert json.loads(inputs["validation"].profile)["features_shape"] == [50, 50]
    assert inputs["training"].digest != inputs["validation"].digest
    assert json.loads(inputs["training"].source)["tags"]["kerasyard"]["dataset_digest"] == \
        tags["kerasyard.dataset_digest"]

    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    model = mlflow.keras.load_model(f"runs:/{run_id}/model")
    assert model.count_params() == 5374
    # Its signature: the input's shape with -1 for the batch, and dtype; pyfunc predicts.
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    [spec_in] = info.signature.inputs.inputs
    assert (spec_in.shape, str(spec_in.type)) == ((-1, 50), "float32")
    x = np.random.default_rng(0).normal(size=(3, 50)).astype("float32")
    assert mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(x).shape == (3, 10)
    # An MLflow 3 logged model of the run, in its experiment, with its params.
    [logged] = mlflow_client.search_logged_models(
        experiment_ids=[job["mlflow"]["experiment_id"]],
        filter_string=f"source_run_id = '{run_id}'")
    assert (logged.name, logged.status.value) == ("model", "READY")
    assert logged.params["fit.batch_size"] == "5"

    hist = client.get(f"/api/v1/jobs/{job_id}/history").get_json()
    assert [e["epoch"] for e in hist["epochs"]] == list(range(1, epochs + 1))
    mlflow_loss = {m.step: m.value for m in mlflow_client.get_metric_history(run_id, "loss")}
    assert all(abs(e["loss"] - mlflow_loss[e["epoch"]]) < 1e-6 for e in hist["epochs"])


def test_validation_split_logs_val_twins(client, worker, mlflow_client):
    spec = tiny_spec("with-validation", epochs=3,
                     dataset={"kind": "sklearn", "name": "breast_cancer"})
    spec["model"]["layers"][0]["units"] = 8
    spec["compile"]["metrics"] = ["accuracy", "auc"]
    spec["fit"].update(validation_split=0.25, batch_size=32)
    job = wait_terminal(client, submit(client, spec))
    assert job["status"] == "succeeded", job["error"]
    run_id = job["mlflow"]["run_id"]
    for name in ("val_loss", "val_accuracy", "val_auc", "auc"):
        assert len(mlflow_client.get_metric_history(run_id, name)) == 3, name
    params = mlflow_client.get_run(run_id).data.params
    assert params["n_train"] == "427" and params["n_val"] == "142"  # 569 * 0.25 -> 142
    assert params["steps_per_epoch"] == "14"  # ceil(427 / 32)


def test_early_stopping_ends_succeeded_with_fewer_epochs(client, worker, mlflow_client):
    spec = tiny_spec("early-stop", epochs=200)
    spec["fit"].update(validation_split=0.25,
                       early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 10.0})
    job = wait_terminal(client, submit(client, spec))
    assert job["status"] == "succeeded", job["error"]
    # Nothing improves by 10.0, so it stops after the first epoch plus `patience` more.
    assert job["summary"]["epochs_completed"] == 3 and job["summary"]["stopped_early"] is True
    assert len(mlflow_client.get_metric_history(job["mlflow"]["run_id"], "val_loss")) == 3


def test_diverging_job_fails_with_reason_in_api_and_mlflow(client, worker, mlflow_client):
    spec = diverging_spec()
    job = wait_terminal(client, submit(client, spec))
    assert job["status"] == "failed"
    assert "diverged" in job["error"]["message"]
    assert "lower compile.optimizer.learning_rate" in job["error"]["message"]
    run = ended_run(mlflow_client, job["mlflow"]["run_id"])
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["kerasyard.error"]
    assert "error.txt" in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert job["progress"]["epoch"] < 50


def test_cancel_running_job_and_failure_of_a_vanished_dataset(client, worker, settings,
                                                              mlflow_client):
    # A long job keeps the single worker busy...
    long_spec = tiny_spec("long", epochs=5000)
    long_spec["fit"]["batch_size"] = 64
    long_id = submit(client, long_spec)
    wait_for(lambda: client.get(f"/api/v1/jobs/{long_id}").get_json()["progress"]["epoch"] >= 3,
             120, what="the long job to train a few epochs")

    # ...while a job on an uploaded dataset waits; its dataset disappears before it runs.
    csv_text = "a,b,target\n" + "\n".join(f"{i / 10},{(i * 7) % 5},{i % 2}" for i in range(40))
    ds = client.post("/api/v1/datasets", data=csv_text, content_type="text/csv").get_json()
    up_spec = tiny_spec("vanishing-dataset", epochs=2,
                        dataset={"kind": "upload", "id": ds["id"], "target": "target"})
    up_id = submit(client, up_spec)
    with session_scope(settings.database_url) as s:
        s.delete(s.get(Dataset, ds["id"]))

    resp = client.post(f"/api/v1/jobs/{long_id}/cancel")
    assert resp.status_code == 202
    job = wait_terminal(client, long_id, timeout=60)
    assert job["status"] == "cancelled"
    done = job["summary"]["epochs_completed"]
    assert 3 <= done < 5000
    run = ended_run(mlflow_client, job["mlflow"]["run_id"])
    assert run.info.status == "KILLED"
    assert len(mlflow_client.get_metric_history(run.info.run_id, "loss")) == done
    assert len(client.get(f"/api/v1/jobs/{long_id}/history").get_json()["epochs"]) == done

    failed = wait_terminal(client, up_id)
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "InvalidSpec"
    assert f"no uploaded dataset with id {ds['id']!r}" in failed["error"]["message"]


def test_uploaded_dataset_trains(client, worker, mlflow_client):
    rows = [f"{x / 10:.2f},{(x * 3) % 7},{int(x % 10 < 5)}" for x in range(60)]
    ds = client.post("/api/v1/datasets", data="f1,f2,cls\n" + "\n".join(rows),
                     content_type="text/csv").get_json()
    spec = tiny_spec("upload-ok", epochs=2,
                     dataset={"kind": "upload", "id": ds["id"], "target": "cls"})
    job = wait_terminal(client, submit(client, spec))
    assert job["status"] == "succeeded", job["error"]
    assert job["plan"]["input_dim"] == 2 and job["plan"]["n_classes"] == 2
    # No data held out: the response and the run's description say the metrics are on the
    # training data; chance levels on that data (30 rows of each class).
    assert job["metrics_on"] == "training"
    run = mlflow_client.get_run(job["mlflow"]["run_id"])
    assert "Metrics on training data" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["kerasyard.metrics_on"] == "training"
    assert run.data.metrics["chance_loss"] == pytest.approx(math.log(2))
    assert run.data.metrics["chance_accuracy"] == 0.5
    # The run's "Datasets": the upload by its name, all 60 rows (2 features) for training.
    [only] = run.inputs.dataset_inputs
    assert [(t.key, t.value) for t in only.tags] == [("mlflow.data.context", "training")]
    assert only.dataset.name == ds["name"]
    assert json.loads(only.dataset.profile)["features_shape"] == [60, 2]
    assert json.loads(only.dataset.source)["tags"]["kerasyard"]["upload"] == ds["id"]


def test_killed_worker_child_is_retried_not_lost(client, worker):
    spec = tiny_spec("survives-a-crash", epochs=400)
    job_id = submit(client, spec)

    def running_pid():
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] == "running" and job["progress"]["epoch"] >= 2:
            return int(job["worker"].rsplit(":", 1)[1])
        return None

    pid = wait_for(running_pid, 120, what="the job to be training")
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    job = wait_terminal(client, job_id, timeout=240)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert job["progress"]["epoch"] == 400
    hist = client.get(f"/api/v1/jobs/{job_id}/history").get_json()["epochs"]
    assert [e["epoch"] for e in hist] == list(range(1, 401))
    worker.wait_ready()  # the pool replaced the child


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "model-log"])
def test_logging_the_model_leaves_the_run_running(settings, mlflow_client, lean):
    """artifacts.log_model against the real server, both ways (the lean recording's few
    requests, MLflow's Model.log): the run stays RUNNING throughout (its end status waits for
    the job's final write), never ended and set back; the model loads from
    ``runs:/<run>/model`` and predicts what the model in memory does."""
    import dataclasses as dc

    import keras
    import mlflow
    import numpy as np

    from worker.recording import artifacts

    experiment_id = mlflow_client.create_experiment(
        f"log-model-{os.getpid()}-{id(settings)}-{lean}")
    settings = dc.replace(settings, lean_recording=lean)
    run = mlflow_client.create_run(experiment_id)
    run_id = run.info.run_id
    mlflow_client.log_param(run_id, "fit.batch_size", "5")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")

    @dc.dataclass
    class Data:
        x_train: np.ndarray

    artifacts.log_model(settings, model, Data(x), run_id)

    after = mlflow_client.get_run(run_id)
    assert after.info.status == "RUNNING" and after.info.end_time is None, after.info
    [logged] = mlflow_client.search_logged_models(experiment_ids=[experiment_id])
    assert (logged.name, logged.source_run_id, logged.status.value) == \
        ("model", run_id, "READY")
    assert logged.params == {"fit.batch_size": "5"}
    assert [o.model_id for o in after.outputs.model_outputs] == [logged.model_id]
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    loaded = mlflow.keras.load_model(f"runs:/{run_id}/model")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    [sig] = pyfunc.metadata.get_input_schema().inputs
    assert (sig.shape, str(sig.type)) == ((-1, 3), "float32")
    np.testing.assert_allclose(pyfunc.predict(x), model.predict(x, verbose=0), rtol=1e-6)
