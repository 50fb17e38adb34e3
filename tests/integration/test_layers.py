"""Every layer type trains through the service: POST /api/v1/jobs -> Celery worker -> Keras.

Two tiny digits jobs cover all of :data:`service.jobspec.layers.LAYER_TYPES`: an image graph
(conv2d, pooling, spatial dropout, global pooling, a concatenate of three heads, then a
residual block with add and multiply) and a token-id sequence model on unscaled digits
(embedding, conv1d, pooling, layer normalization, lstm, gru, simple_rnn, bidirectional and
an average of two global poolings).
"""

from __future__ import annotations

import math

import pytest

from service.jobspec.layers import LAYER_TYPES
from tests.helpers import ended_run

from .conftest import wait_terminal
from .test_training import submit

pytestmark = pytest.mark.integration

EPOCHS = 2


def _digits(name: str, layers: list[dict], standardize: bool = True) -> dict:
    return {
        "name": name, "experiment": "tests-layers",
        "dataset": {"kind": "sklearn", "name": "digits", "standardize": standardize},
        "model": {"layers": layers},
        "compile": {"loss": "sparse_categorical_crossentropy",
                    "optimizer": {"name": "adam", "learning_rate": 0.01},
                    "metrics": ["accuracy"]},
        "fit": {"epochs": EPOCHS, "batch_size": 128, "validation_split": 0.2, "seed": 0},
    }


IMAGE_GRAPH = _digits("layers-image-graph", [
    {"type": "reshape", "target_shape": [8, 8, 1]},
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "batch_normalization"},
    {"type": "max_pooling2d"},
    {"type": "spatial_dropout2d", "rate": 0.1},
    {"type": "average_pooling2d", "name": "pooled"},
    {"type": "global_average_pooling2d", "name": "gap", "inputs": ["pooled"]},
    {"type": "global_max_pooling2d", "name": "gmp", "inputs": ["pooled"]},
    {"type": "flatten", "name": "flat", "inputs": ["pooled"]},
    {"type": "dense", "units": 4, "name": "flat_dense"},
    {"type": "concatenate", "name": "heads", "inputs": ["gap", "gmp", "flat_dense"]},
    {"type": "dense", "units": 8, "activation": "relu", "name": "h"},
    {"type": "dense", "units": 8, "name": "a"},
    {"type": "add", "name": "residual", "inputs": ["h", "a"]},
    {"type": "dense", "units": 8, "activation": "sigmoid", "name": "gate", "inputs": ["h"]},
    {"type": "multiply", "name": "gated", "inputs": ["residual", "gate"]},
    {"type": "dropout", "rate": 0.1},
    {"type": "activation", "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
])

TOKEN_SEQUENCE = _digits("layers-token-sequence", [
    {"type": "embedding", "input_dim": 17, "output_dim": 4},
    {"type": "conv1d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "max_pooling1d"},
    {"type": "average_pooling1d", "pool_size": 2},
    {"type": "spatial_dropout1d", "rate": 0.1},
    {"type": "layer_normalization"},
    {"type": "lstm", "units": 4, "return_sequences": True},
    {"type": "gru", "units": 4, "return_sequences": True},
    {"type": "simple_rnn", "units": 4, "return_sequences": True},
    {"type": "bidirectional", "name": "bi",
     "layer": {"type": "lstm", "units": 2, "return_sequences": True}},
    {"type": "global_average_pooling1d", "name": "mean", "inputs": ["bi"]},
    {"type": "global_max_pooling1d", "name": "max", "inputs": ["bi"]},
    {"type": "average", "inputs": ["mean", "max"]},
    {"type": "dense", "units": 10, "activation": "softmax"},
], standardize=False)


def _check_job(client, mlflow_client, spec: dict, job_id: str) -> dict:
    """The job finished with every epoch; its plan lists the spec's layers; the model it
    logged is the planned one, layer by layer (Keras's shapes and parameters)."""
    import mlflow

    job = wait_terminal(client, job_id, timeout=300)
    assert job["status"] == "succeeded", (spec["name"], job["error"])
    plan, layers = job["plan"], spec["model"]["layers"]
    assert [la["type"] for la in plan["layers"]] == [la["type"] for la in layers]
    assert [la["name"] for la in plan["layers"]] == [
        la.get("name", f"{la['type']}_{i}") for i, la in enumerate(layers)]
    assert plan["input_shape"] == [64] and plan["layers"][-1]["output_shape"] == [10]
    assert plan["total_params"] == sum(la["params"] for la in plan["layers"]) > 0
    hist = client.get(f"/api/v1/jobs/{job_id}/history").get_json()["epochs"]
    assert [e["epoch"] for e in hist] == list(range(1, EPOCHS + 1))
    assert all(math.isfinite(e["loss"]) and math.isfinite(e["val_loss"]) for e in hist)
    run = ended_run(mlflow_client, job["mlflow"]["run_id"])
    assert run.data.params["total_params"] == str(plan["total_params"])
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    model = mlflow.keras.load_model(f"runs:/{job['mlflow']['run_id']}/model")
    assert model.count_params() == plan["total_params"]
    assert model.inputs[0].dtype == plan["input_dtype"]
    for la in plan["layers"]:
        kl = model.get_layer(la["name"])
        assert list(kl.output.shape[1:]) == la["output_shape"], la["name"]
        assert kl.count_params() == la["params"], la["name"]
    return plan


def test_every_layer_type_trains_through_the_service(client, worker, mlflow_client):
    specs = [IMAGE_GRAPH, TOKEN_SEQUENCE]
    assert {la["type"] for s in specs for la in s["model"]["layers"]} == set(LAYER_TYPES)
    ids = [submit(client, s) for s in specs]  # one worker: they train one after the other
    image, tokens = (_check_job(client, mlflow_client, s, i) for s, i in zip(specs, ids))
    assert image["input_dtype"] == "float32" and tokens["input_dtype"] == "int32"
    shapes = {la["name"]: la["output_shape"] for la in image["layers"]}
    assert shapes["pooled"] == [2, 2, 4] and shapes["heads"] == [12]
    shapes = {la["name"]: la["output_shape"] for la in tokens["layers"]}
    assert shapes["bi"] == [16, 4] and shapes["embedding_0"] == [64, 4]


def _refused(client, spec: dict) -> dict[str, str]:
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.get_json()
    body = resp.get_json()
    assert body["error"]["code"] == "invalid_spec"
    newest = client.get("/api/v1/jobs?limit=500").get_json()["jobs"]  # newest first
    assert spec["name"] not in {j["name"] for j in newest}  # nothing stored
    return {d["loc"]: d["msg"] for d in body["error"]["details"]}


def test_shapes_and_graphs_that_do_not_fit_are_refused_naming_the_layer(client):
    kernel = _digits("too-big-kernel", [
        {"type": "reshape", "target_shape": [8, 8, 1]},
        {"type": "conv2d", "filters": 4, "kernel_size": 9},
        {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}])
    assert _refused(client, kernel) == {"model.layers.1": (
        "model.layers.1 (conv2d): a 9×9 kernel with padding 'valid' does not fit its 8×8 "
        "input; use padding 'same' or kernel_size at most 8")}
    cycle = _digits("cycle", [
        {"type": "dense", "units": 8, "name": "a", "inputs": ["c"]},
        {"type": "dense", "units": 8, "name": "b", "inputs": ["a"]},
        {"type": "dense", "units": 8, "name": "c", "inputs": ["b"]},
        {"type": "dense", "units": 10, "activation": "softmax", "inputs": ["c"]}])
    errors = _refused(client, cycle)
    assert any("'a' -> 'b' -> 'c' -> 'a'" in msg for msg in errors.values()), errors
    merge = _digits("merge", [
        {"type": "dense", "units": 8, "name": "a"},
        {"type": "dense", "units": 4, "name": "b"},
        {"type": "add", "inputs": ["a", "b"]},
        {"type": "dense", "units": 10, "activation": "softmax"}])
    errors = _refused(client, merge)
    assert list(errors) == ["model.layers.2"], errors
    assert "'a' (8,), 'b' (4,)" in errors["model.layers.2"]
