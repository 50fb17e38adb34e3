"""Uploaded .npz data held in memory or streamed from a memory map (worker/training/streaming.py):
the same batches in the same order, the same trained weights; the door streams only an upload,
only when it would not fit the budget held in memory."""

from __future__ import annotations

import dataclasses
import io

import keras
import numpy as np
import pytest

from service import jobspec as S
from service.jobspec.memory import MB, dataset_bytes, estimate
from service.uploads.datasets import Upload
from service.uploads.npz import npz_info, profile
from tests.helpers import tiny_spec
from worker.training import datasets as D
from worker.training import model as M
from worker.training import streaming as ST
from worker.training import trainer as F


def upload(x, y) -> Upload:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    content = buf.getvalue()
    return Upload(content, "npz", [], profile(content, 10 * MB))


def spec_for(up: Upload, budget_mb: int, **fit):
    d = tiny_spec("npz", dataset={"kind": "upload", "id": "u1"})
    d["model"]["layers"] = [{"type": "dense", "units": 5, "activation": "relu"},
                            {"type": "dense", "units": 3, "activation": "softmax"}]
    d["compile"] = {"loss": "sparse_categorical_crossentropy", "optimizer": "adam"}
    d["fit"] = {"batch_size": 16, "epochs": 2, "validation_split": 0.25, "seed": 3, **fit}
    return S.validate_job(d, S.Limits(max_job_memory_mb=budget_mb),
                          lambda _id: npz_info(up.profile, None))


@pytest.fixture()
def dataset():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(150, 6)) * [1, 10, 100, 1, 1, 5] + 3).astype("float64")
    y = (np.arange(150) % 3) * 7  # classes 0, 7, 14: mapped to 0..2
    return upload(x, y)


def both(dataset, tmp_path, **fit):
    spec, plan = spec_for(dataset, 2048, **fit)
    assert not plan.streamed
    held = D.build_dataset(spec, plan, lambda _id: dataset)
    streamed_plan = dataclasses.replace(plan, streamed=True)
    streamed = D.build_dataset(spec, streamed_plan, lambda _id: dataset, str(tmp_path))
    return spec, plan, held, streamed


def test_streamed_rows_give_the_in_memory_batches(dataset, tmp_path):
    spec, plan, held, streamed = both(dataset, tmp_path)
    assert isinstance(streamed.x_train, ST.StreamedRows)
    assert isinstance(held.x_train, np.ndarray) and held.x_train.dtype == np.float32
    assert streamed.x_train.shape == held.x_train.shape == (plan.n_train, 6)
    assert list((tmp_path / dataset.profile["sha256"]).iterdir()) != []
    np.testing.assert_array_equal(held.y_train, streamed.y_train)
    assert set(np.unique(held.y_train)) == {0, 1, 2} and held.class_names == ["0", "7", "14"]
    a = D.epoch_batches(held.x_train, held.y_train, 16, 3)
    b = D.epoch_batches(streamed.x_train, streamed.y_train, 16, 3)
    for _ in range(2 * plan.steps_per_epoch):
        (xa, ya), (xb, yb) = next(a), next(b)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(held.x_val, streamed.x_val[:])
    # standardized on the training split
    assert np.abs(held.x_train.mean(axis=0)).max() < 1e-5
    assert held.digest == streamed.digest


def test_integer_x_is_not_standardized(tmp_path):
    up = upload(np.arange(80).reshape(40, 2) % 9, np.arange(40) % 3)
    spec, plan = spec_for(up, 2048)
    data = D.build_dataset(spec, dataclasses.replace(plan, streamed=True),
                           lambda _id: up, str(tmp_path))
    got = data.x_train[np.arange(len(data.x_train))]
    assert got.dtype == np.int32 and got.max() <= 8 and got.min() >= 0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="trains on TensorFlow")
def test_streamed_training_gives_the_in_memory_weights(dataset, tmp_path):
    spec, plan, held, streamed = both(dataset, tmp_path)
    weights, histories = [], []
    for data in (held, streamed):
        keras.utils.set_random_seed(spec.fit.seed)
        model = M.build_model(spec, plan)
        M.compile_model(model, spec, plan, 1)
        yv = M.prepare_targets(data.y_val, spec, plan)
        histories.append(F.fit(model, data.x_train, M.prepare_targets(data.y_train, spec, plan),
                               batch_size=16, epochs=2, steps_per_execution=1, seed=3,
                               shuffle=True, validation=(data.x_val, yv)))
        weights.append(model.get_weights())
    for w_held, w_streamed in zip(*weights):
        np.testing.assert_allclose(w_held, w_streamed, rtol=0, atol=1e-6)
    assert len(histories[1]["loss"]) == len(histories[1]["val_loss"]) == 2
    np.testing.assert_allclose(histories[0]["val_loss"], histories[1]["val_loss"], rtol=1e-5)


def test_feature_stats_match_numpy(dataset):
    x = np.random.default_rng(0).normal(size=(500, 3, 2)).astype("float32")
    idx = np.random.default_rng(1).permutation(500)[:400]
    mean, std = ST.feature_stats(x, idx, (3, 2))
    np.testing.assert_allclose(mean, x[idx].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(std, x[idx].std(axis=0), rtol=1e-5)


def test_the_door_streams_an_upload_over_the_budget_only(dataset):
    _, plan = spec_for(dataset, 2048)
    assert not plan.streamed
    big = dataclasses.replace(plan, n_samples=150_000, n_train=112_500, n_val=37_500)
    held = dataset_bytes(big)
    streamed = dataset_bytes(dataclasses.replace(big, streamed=True))
    assert streamed < held / 3
    spec, _ = spec_for(dataset, 2048)
    budget = 3 * MB
    assert estimate(spec, big).total > budget
    assert S.memory.streams(spec, big, npz_info(dataset.profile, None), budget)
    csv_like = S.DatasetInfo(150, 6, "classification", 3)
    assert not S.memory.streams(spec, big, csv_like, budget)


def test_a_csv_over_the_budget_is_refused_naming_npz():
    d = tiny_spec("big", dataset={"kind": "synthetic", "name": "classification",
                                  "n_samples": 100_000, "n_features": 20, "n_classes": 2})
    with pytest.raises(S.SpecError) as exc:
        S.validate_job(d, S.Limits(max_job_memory_mb=10))
    msg = next(e.msg for e in exc.value.details if e.loc == "dataset")
    assert "Only an uploaded .npz" in msg and "application/x-npz" in msg
