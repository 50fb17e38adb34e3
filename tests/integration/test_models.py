"""Your own model: a .keras file uploaded to /api/v1/models, refused with nothing stored when it
holds code (a Lambda layer), and trained through the service like any job."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from .conftest import wait_terminal

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.integration


def _count(settings) -> int:
    from service.store.db import session_scope
    from service.store.models import KerasModel

    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(KerasModel))


@pytest.fixture(scope="module")
def iris_keras(tmp_path_factory) -> bytes:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path_factory.mktemp("models") / "iris.keras"
    model.save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory) -> bytes:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path_factory.mktemp("models") / "lambda.keras"
    model.save(path)
    return path.read_bytes()


def _iris_job(model_id: str) -> dict:
    return {"name": "uploaded-iris", "experiment": "tests",
            "dataset": {"kind": "sklearn", "name": "iris"},
            "model": {"uploaded": model_id},
            "compile": {"loss": "sparse_categorical_crossentropy",
                        "optimizer": {"name": "adam", "learning_rate": 0.01},
                        "metrics": ["accuracy"]},
            "fit": {"batch_size": 32, "epochs": 3, "validation_split": 0.2, "seed": 0}}


def test_a_lambda_model_is_refused_with_its_reason_and_nothing_is_stored(client, settings,
                                                                         lambda_keras):
    before = _count(settings)
    resp = client.post("/api/v1/models?name=lam", data=lambda_keras,
                       content_type="application/x-keras")
    assert resp.status_code == 422, resp.get_data()[:500]
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_model"
    assert error["details"][0]["loc"] == "config.layers.1"
    assert "runs arbitrary Python code" in error["details"][0]["msg"]
    assert _count(settings) == before
    resp = client.post("/api/v1/models", data=b"not a zip", content_type="application/x-keras")
    assert resp.status_code == 422 and _count(settings) == before


def test_upload_show_and_list(client, iris_keras):
    resp = client.post("/api/v1/models?name=iris-mlp", data=iris_keras,
                       content_type="application/x-keras")
    assert resp.status_code == 201, resp.get_data()[:500]
    model = resp.get_json()
    assert model["name"] == "iris-mlp" and model["input_shape"] == [4]
    assert model["n_params"] == 4 * 8 + 8 + 8 * 3 + 3
    assert [(s["type"], s["units"]) for s in model["layers"]] == [("dense", 8), ("dense", 3)]
    got = client.get(f"/api/v1/models/{model['id']}").get_json()
    assert got["sha256"] == model["sha256"] and got["layers"] == model["layers"]
    listed = client.get("/api/v1/models").get_json()["models"]
    assert model["id"] in [m["id"] for m in listed] and "layers" not in listed[0]
    assert client.get("/api/v1/models/nope").status_code == 404


def test_a_job_spec_is_checked_against_the_uploaded_model(client, iris_keras):
    model = client.post("/api/v1/models", data=iris_keras,
                        content_type="application/x-keras").get_json()
    spec = _iris_job(model["id"])
    spec["dataset"] = {"kind": "sklearn", "name": "wine"}  # 13 features, the model takes 4
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 422
    assert any(d["loc"] == "model.uploaded" for d in resp.get_json()["error"]["details"])
    resp = client.post("/api/v1/jobs", json=_iris_job("no-such-model"))
    assert resp.status_code == 422 and "no uploaded model" in resp.get_data(as_text=True)


def test_an_uploaded_model_trains_through_the_service(client, worker, mlflow_client,
                                                       iris_keras):
    model = client.post("/api/v1/models?name=iris-train", data=iris_keras,
                        content_type="application/x-keras").get_json()
    job = client.post("/api/v1/jobs", json=_iris_job(model["id"]))
    assert job.status_code == 202, job.get_data()[:1000]
    job = job.get_json()
    assert job["plan"]["total_params"] == model["n_params"]
    done = wait_terminal(client, job["id"], timeout=300)
    assert done["status"] == "succeeded", done
    history = client.get(f"/api/v1/jobs/{job['id']}/history").get_json()
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert all("val_accuracy" in e for e in history["epochs"])
    run = mlflow_client.get_run(done["mlflow"]["run_id"])
    assert run.data.tags["kerasyard.uploaded_model"] == model["id"]
    assert len(mlflow_client.get_metric_history(run.info.run_id, "loss")) == 3
