"""What a run says it trained on (worker.recording.inputs) and what model_summary.txt and the
logged model's signature show (worker.training.model, worker.recording.artifacts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service import jobspec as S
from tests.helpers import lecture_spec, tiny_spec
from worker.recording import artifacts, inputs
from worker.training import datasets as D
from worker.training import model as M


def built(spec_dict):
    spec, plan = S.validate_job(spec_dict)
    return spec, plan, D.build_dataset(spec, plan)


def by_context(got) -> dict:
    return {t.value: i.dataset for i in got for t in i.tags if t.key == "mlflow.data.context"}


def digits_spec(validation_split: float = 0.2) -> dict:
    spec = lecture_spec(validation_split=validation_split, batch_size=32)
    spec["dataset"] = {"kind": "sklearn", "name": "digits"}
    return spec


def test_training_and_validation_are_two_datasets_with_their_digests_and_shapes():
    spec, plan, data = built(digits_spec())
    got = by_context(inputs.dataset_inputs(spec, data))
    assert set(got) == {"training", "validation"}
    train, val = got["training"], got["validation"]
    assert train.name == val.name == "sklearn:digits"
    # Two datasets, not one folded by MLflow; the same data gives the same digests again,
    # other rows (another shuffle) others.
    assert len({train.digest, val.digest}) == 2
    again = by_context(inputs.dataset_inputs(*built(digits_spec())[::2]))
    assert (again["training"].digest, again["validation"].digest) == (train.digest, val.digest)
    other = digits_spec()
    other["fit"]["seed"] = 1
    reshuffled = by_context(inputs.dataset_inputs(*built(other)[::2]))
    assert reshuffled["training"].digest not in (train.digest, val.digest)
    assert json.loads(train.profile)["features_shape"] == [plan.n_train, 64]
    assert json.loads(val.profile)["features_shape"] == [plan.n_val, 64] == [359, 64]
    assert json.loads(val.profile)["targets_shape"] == [359]
    schema = json.loads(json.loads(train.schema)["mlflow_tensorspec"]["features"])
    assert schema == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 64]}}]
    source = json.loads(train.source)["tags"]["kerasyard"]
    assert source["loader"] == "sklearn.datasets.load_digits"
    assert source["dataset_digest"] == data.digest
    assert source["rows"] == f"0:{plan.n_train} of 1797, after the shuffle"
    assert train.source_type == "code"


def test_without_held_out_data_only_training():
    spec, _, data = built(tiny_spec())
    [only] = inputs.dataset_inputs(spec, data)
    assert [(t.key, t.value) for t in only.tags] == [("mlflow.data.context", "training")]
    assert only.dataset.name == "synthetic:circle"
    source = json.loads(only.dataset.source)["tags"]["kerasyard"]
    assert (source["n_samples"], source["seed"], source["shuffle_seed"]) == (64, 1, 1)


@pytest.mark.parametrize("upload,name", [
    ({"name": "my-sequences", "filename": "seq.npz", "sha256": "ab" * 32}, "my-sequences"),
    (None, "upload:ds123"),
])
def test_an_upload_is_named_by_its_name_or_id(upload, name):
    ds = S.UploadDataset(kind="upload", id="ds123", target="y")
    got_name, source = inputs.dataset_label(ds, upload)
    assert got_name == name
    assert source["upload"] == "ds123" and source["target"] == "y"
    if upload:
        assert source["sha256"] == upload["sha256"] and "name" not in source


def test_log_inputs_is_one_call_and_none_without_inputs():
    calls = []

    class Client:
        def log_inputs(self, run_id, datasets):
            calls.append((run_id, len(datasets)))

    spec, _, data = built(digits_spec())
    inputs.log_inputs(Client(), "r1", inputs.dataset_inputs(spec, data))
    inputs.log_inputs(Client(), "r2", None)
    assert calls == [("r1", 2)]


def test_model_summary_shows_the_lecture_quantities_and_each_layers_output_shape():
    import keras

    spec, plan, _ = built(digits_spec())
    model = keras.Sequential([keras.Input((64,)), keras.layers.Reshape((8, 8, 1), name="img"),
                              keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(name="pool"),
                              keras.layers.Dense(10, name="out")])
    text = M.summary_text(model, plan)
    assert f"steps_per_epoch    ceil({plan.n_train} / 32) = {plan.steps_per_epoch}" in text
    assert f"total_updates      {plan.steps_per_epoch} x {plan.epochs} epochs" in text
    for layer, shape in (("img", "(None, 8, 8, 1)"), ("conv", "(None, 6, 6, 4)"),
                         ("pool", "(None, 4)"), ("out", "(None, 10)")):
        [line] = [ln for ln in text.splitlines() if f"{layer} (" in ln]
        assert shape in line, line


def test_signature_sample_takes_the_models_input_dtype():
    import keras
    from mlflow.models import infer_signature

    tokens = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 3),
                               keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    x = np.arange(60, dtype="float32").reshape(10, 6) % 10
    sample = artifacts.signature_sample(tokens, x)
    assert sample.dtype == np.int32 and sample.shape == (5, 6)
    sig = infer_signature(sample, keras.ops.convert_to_numpy(tokens(sample)))
    [spec] = sig.inputs.inputs
    assert (spec.type, spec.shape) == (np.dtype("int32"), (-1, 6))
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    assert artifacts.signature_sample(dense, x).dtype == np.float32


def test_rows_read_on_demand_are_not_read_for_the_inputs():
    """An upload streamed from disk (rows read as they are indexed): the inputs read two rows
    for the schema and the shape for the profile, nothing else."""
    import dataclasses

    read = []

    class Rows:  # what worker.training.streaming hands over: not an ndarray
        def __init__(self, n, shape, dtype):
            self.shape, self.dtype = (n, *shape), np.dtype(dtype)
            self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

        def __len__(self):
            return self.shape[0]

        def __getitem__(self, key):
            rows = np.arange(self.shape[0])[key]
            read.append(len(rows))
            return np.zeros((len(rows), *self.shape[1:]), self.dtype)

    spec, _, data = built(digits_spec())
    data = dataclasses.replace(data, x_train=Rows(90_000, (28, 28), "float32"),
                               y_train=np.zeros(90_000, "int32"),
                               x_val=Rows(10_000, (28, 28), "float32"),
                               y_val=np.zeros(10_000, "int32"))
    got = by_context(inputs.dataset_inputs(spec, data))
    assert json.loads(got["training"].profile)["features_shape"] == [90_000, 28, 28]
    assert json.loads(got["validation"].profile)["features_nbytes"] == 10_000 * 28 * 28 * 4
    schema = json.loads(json.loads(got["training"].schema)["mlflow_tensorspec"]["features"])
    assert schema[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 28, 28]}
    assert read == [2, 2]


def _refusing_client(refusals: int, message: str):
    """A client whose first ``refusals`` log_inputs calls are refused as MLflow's server
    refuses them (its REST answer, raised by MlflowClient as RestException)."""
    from mlflow.exceptions import RestException

    class Client:
        calls = 0

        def log_inputs(self, run_id, datasets):
            Client.calls += 1
            if Client.calls <= refusals:
                raise RestException({"error_code": "BAD_REQUEST", "message": message})

    return Client()


RACE = ("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
        "datasets.name, datasets.digest")


def test_log_inputs_makes_the_call_again_when_another_run_inserted_the_dataset_first():
    spec, _, data = built(digits_spec())
    cl = _refusing_client(1, RACE)
    inputs.log_inputs(cl, "r1", inputs.dataset_inputs(spec, data))
    assert cl.calls == 2

    cl = _refusing_client(inputs.INSERT_RACE_TRIES, RACE)  # a race that never ends: raised
    with pytest.raises(Exception, match="UNIQUE constraint failed"):
        inputs.log_inputs(cl, "r1", inputs.dataset_inputs(spec, data))
    assert cl.calls == inputs.INSERT_RACE_TRIES


def test_log_inputs_raises_any_other_refusal_at_once():
    spec, _, data = built(digits_spec())
    cl = _refusing_client(1, "Run 'r1' not found")
    with pytest.raises(Exception, match="not found"):
        inputs.log_inputs(cl, "r1", inputs.dataset_inputs(spec, data))
    assert cl.calls == 1
