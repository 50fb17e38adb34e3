"""Datasets: shapes match what the spec promises, deterministic by seed; CSV parsing."""

from __future__ import annotations

import numpy as np
import pytest

from service import jobspec as S
from service.uploads import datasets as U
from tests.helpers import lecture_spec, tiny_spec
from worker.training import datasets as D


def build(spec_dict):
    spec, plan = S.validate_job(spec_dict)
    return plan, D.build_dataset(spec, plan)


@pytest.mark.parametrize("dataset,n_features,classes", [
    ({"kind": "synthetic", "name": "classification", "n_samples": 200, "n_features": 50,
      "n_classes": 10}, 50, 10),
    ({"kind": "synthetic", "name": "circle", "n_samples": 100}, 2, 2),
    ({"kind": "synthetic", "name": "xor", "n_samples": 100}, 2, 2),
    ({"kind": "synthetic", "name": "gauss", "n_samples": 100}, 2, 2),
    ({"kind": "synthetic", "name": "spiral", "n_samples": 100}, 2, 2),
    ({"kind": "sklearn", "name": "iris"}, 4, 3),
    ({"kind": "sklearn", "name": "wine"}, 13, 3),
    ({"kind": "sklearn", "name": "breast_cancer"}, 30, 2),
    ({"kind": "sklearn", "name": "digits"}, 64, 10),
])
def test_classification_sets_match_their_declared_shape(dataset, n_features, classes):
    spec = lecture_spec(batch_size=5, validation_split=0.0)  # every sample in x_train
    spec["dataset"] = dataset
    spec["model"]["layers"][-1]["units"] = classes
    plan, data = build(spec)
    assert data.x_train.shape == (plan.n_train, n_features) == (plan.n_samples, plan.input_dim)
    assert data.x_train.dtype == np.float32
    assert set(np.unique(data.y_train)) == set(range(classes))
    assert len(data.class_names) == classes


@pytest.mark.parametrize("dataset,n_features", [
    ({"kind": "synthetic", "name": "regression", "n_samples": 80}, 10),
    ({"kind": "synthetic", "name": "linear", "n_samples": 80, "n_features": 3}, 3),
    ({"kind": "sklearn", "name": "diabetes"}, 10),
])
def test_regression_sets(dataset, n_features):
    spec = tiny_spec(dataset=dataset, compile={"loss": "mse", "optimizer": "adam"})
    spec["model"]["layers"][1]["activation"] = "linear"
    plan, data = build(spec)
    assert plan.task == "regression" and plan.n_classes is None
    assert data.x_train.shape[1] == n_features
    assert data.y_train.dtype == np.float32 and data.class_names is None


def test_linear_set_is_y_equals_x_dot_p_plus_noise():
    ds = S.SyntheticDataset(kind="synthetic", name="linear", n_samples=500, n_features=2,
                            noise=0.0, seed=3)
    x, y = D.synthetic(ds)
    p, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(x @ p, y, atol=1e-4)


def test_deterministic_by_seed_and_different_across_seeds():
    spec = lecture_spec()
    _, a = build(spec)
    _, b = build(spec)
    assert a.digest == b.digest
    np.testing.assert_array_equal(a.x_train, b.x_train)
    spec["dataset"]["seed"] = 1
    _, c = build(spec)
    assert c.digest != a.digest


def test_split_is_shuffled_so_validation_holds_every_class():
    # iris is sorted by class; a plain tail split would validate on class 2 only.
    spec = tiny_spec(dataset={"kind": "sklearn", "name": "iris"},
                     compile={"loss": "sparse_categorical_crossentropy", "optimizer": "adam"})
    spec["model"]["layers"][1].update(units=3, activation="softmax")
    spec["fit"]["validation_split"] = 0.2
    plan, data = build(spec)
    assert (plan.n_train, plan.n_val) == (120, 30)
    assert set(np.unique(data.y_val)) == {0, 1, 2}
    assert abs(float(data.x_train.mean())) < 1e-5  # standardized on the training rows


def test_epoch_batches_cover_every_sample_once_per_epoch():
    x = np.arange(10, dtype="float32").reshape(-1, 1)
    gen = D.epoch_batches(x, np.arange(10), 4, seed=0)
    for _ in range(3):
        seen = np.concatenate([next(gen)[1] for _ in range(3)])  # 4 + 4 + 2
        assert sorted(seen.tolist()) == list(range(10))


CSV = b"x1,x2,species\n1.0,2,setosa\n1.5,2,versicolor\n0.5,3,setosa\n2.5,1,virginica\n"


def test_csv_profile_and_upload_info():
    prof = U.profile(CSV)
    assert prof["n_rows"] == 4
    cols = {c["name"]: c for c in prof["columns"]}
    assert cols["x1"]["numeric"] and not cols["x1"]["integer"]
    assert cols["x2"]["integer"] and not cols["species"]["numeric"]
    info = U.upload_info(prof["columns"], prof["n_rows"], "species", None)
    assert (info.task, info.n_classes, info.n_features) == ("classification", 3, 2)
    _, y, classes = U.load_arrays(CSV, "species", "classification")
    assert classes == ["setosa", "versicolor", "virginica"] and y.tolist() == [0, 1, 0, 2]
    numeric = U.profile(b"x1,x2\n1.5,2\n0.25,3\n2.5,1\n")
    reg = U.upload_info(numeric["columns"], 3, "x1", None)
    assert (reg.task, reg.n_features) == ("regression", 1)


@pytest.mark.parametrize("content,words", [
    (b"a,b\n1,2\n", "at least 2 data rows"),
    (b"a,a\n1,2\n3,4\n", "name every column once"),
    (b"a,b\n1,2\n3\n", "line 3 has 1 fields"),
    (b"\xff\xfe\x00a", "not UTF-8"),
])
def test_bad_csv_is_explained(content, words):
    with pytest.raises(U.CsvError, match=words):
        U.profile(content)


def test_non_numeric_feature_is_named():
    prof = U.profile(b"name,y\nann,1\nbob,0\ncid,1\n")
    with pytest.raises(S.SpecError) as info:
        U.upload_info(prof["columns"], 3, "y", None)
    assert "['name'] are not" in info.value.details[0].msg
