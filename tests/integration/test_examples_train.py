"""The examples train through the service (API -> broker -> worker -> Keras -> MLflow), their
epochs cut to 1-2: each job file in examples/, the sequence example on the .npz its script
writes, and the model examples/upload_model.py builds and uploads. Each run's logged model
loads back with MLflow and predicts on input of the signature's shape and dtype."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml

from tests.helpers import ROOT, ended_run, example_module

from .conftest import wait_terminal

pytestmark = pytest.mark.integration

EPOCHS = 2


def load(path) -> dict:
    return json.loads(path.read_text()) if path.suffix == ".json" else \
        yaml.safe_load(path.read_text())


JOBS = sorted(p for p in (ROOT / "examples").iterdir()
              if p.suffix in (".json", ".yaml") and "base" not in load(p)  # not a sweep
              and p.name not in ("sequence_lstm.json",  # it needs its upload: its own test
                                 "digits_cnn.json"))  # its own test checks its shapes too


def train(client, spec: dict, epochs: int = EPOCHS) -> dict:
    spec = dict(spec, name=f"ci {spec['name']}", fit=dict(spec["fit"], epochs=epochs))
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 202, resp.get_json()
    job = wait_terminal(client, resp.get_json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["summary"]["epochs_completed"] == epochs
    return job


def check_run(mlflow_client, job: dict) -> object:
    """The run finished with its dataset inputs, and its model predicts on a sample of the
    signature's shape and dtype; returns the run."""
    import mlflow

    run = ended_run(mlflow_client, job["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    contexts = sorted(t.value for i in run.inputs.dataset_inputs for t in i.tags)
    assert contexts == (["training", "validation"] if job["plan"]["n_val"] else ["training"])
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    uri = f"runs:/{run.info.run_id}/model"
    [sig] = mlflow.models.get_model_info(uri).signature.inputs.inputs
    assert sig.shape[0] == -1
    x = np.zeros((3, *sig.shape[1:]), dtype=sig.type)
    assert mlflow.pyfunc.load_model(uri).predict(x).shape[0] == 3
    return run


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_each_job_example_trains(client, worker, mlflow_client, path):
    job = train(client, load(path))
    check_run(mlflow_client, job)


def test_the_digits_cnn_logs_its_shapes(client, worker, mlflow_client):
    job = train(client, load(ROOT / "examples" / "digits_cnn.json"), epochs=1)
    run = check_run(mlflow_client, job)
    import mlflow

    [sig] = mlflow.models.get_model_info(
        f"runs:/{run.info.run_id}/model").signature.inputs.inputs
    assert (sig.shape, str(sig.type)) == ((-1, 64), "float32")
    summary = mlflow_client.download_artifacts(run.info.run_id, "model_summary.txt")
    text = open(summary).read()
    assert "total_updates      45 x 1 epochs = 45" in text
    assert "(None, 6, 6, 16)" in text and "(None, 3, 3, 32)" in text  # conv outputs


def test_the_sequence_example_trains_on_its_npz(client, worker, mlflow_client):
    x, y = example_module("make_sequences").make()
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    resp = client.post("/api/v1/datasets?name=sequences", data=buf.getvalue(),
                       content_type="application/x-npz")
    assert resp.status_code == 201, resp.get_json()
    spec = load(ROOT / "examples" / "sequence_lstm.json")
    spec["dataset"]["id"] = resp.get_json()["id"]
    run = check_run(mlflow_client, train(client, spec, epochs=1))
    names = {i.dataset.name for i in run.inputs.dataset_inputs}
    assert names == {"sequences"}
    import mlflow

    [sig] = mlflow.models.get_model_info(
        f"runs:/{run.info.run_id}/model").signature.inputs.inputs
    assert (sig.shape, str(sig.type)) == ((-1, 20), "int32")  # token ids stay integers


def test_the_uploaded_model_example_trains(client, worker, mlflow_client, tmp_path):
    example = example_module("upload_model")
    path = tmp_path / "digits_skip.keras"
    example.build().save(path)
    resp = client.post("/api/v1/models?name=digits-skip", data=path.read_bytes(),
                       content_type="application/x-keras")
    assert resp.status_code == 201, resp.get_json()
    job = train(client, example.job(resp.get_json()["id"], EPOCHS))
    check_run(mlflow_client, job)
