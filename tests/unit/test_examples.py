"""Every shipped example is a valid spec at the door (the README and docs point people at
them): the job and sweep files, the sequence example against the .npz its script writes, and
the job examples/upload_model.py submits against the model it builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from service.jobspec import validate_job
from service.jobspec.sweep_checks import validate_sweep
from tests.helpers import ROOT, example_module, sequences_info

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".json", ".yaml"))


def load(path):
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(
        path.read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path):
    data = load(path)
    if "base" in data:  # a sweep
        _, sweep_plan = validate_sweep(data)
        assert sweep_plan.total > 0
        return
    _, plan = validate_job(data, resolve_upload=sequences_info)
    assert plan.total_params > 0


def test_lecture_example_is_the_contract_document():
    data = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    _, plan = validate_job(data)
    assert (plan.steps_per_epoch, plan.total_updates, plan.total_params) == (40, 40_000, 5_374)


def test_the_lecture_sweep_trains_what_the_lecture_job_trains_with_three_seeds():
    """The sweep's base is the lecture job's data: 200 training samples, 40 updates an epoch
    at batch size 5; its largest batch size is the full batch; each configuration has 3
    seeds, so the report has a noise to hold the differences against."""
    job = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    sweep = json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())
    _, job_plan = validate_job(job)
    _, base_plan = validate_job(sweep["base"])
    assert sweep["base"]["dataset"] == job["dataset"]
    assert (base_plan.n_train, base_plan.steps_per_epoch) == (job_plan.n_train, 40) == (200, 40)
    assert max(sweep["parameters"]["fit.batch_size"]) == base_plan.n_train
    _, plan = validate_sweep(sweep)
    assert plan.repeats == 3 and plan.total == 36


def test_the_new_examples_are_what_they_say():
    """The digits CNN, the residual MLP and the LSTM: their shapes and parameter counts as
    Keras counts them (conv 3*3*1*16+16, 3*3*16*32+32, dense 32*10+10; ...)."""
    _, cnn = validate_job(load(ROOT / "examples" / "digits_cnn.json"))
    assert (cnn.total_params, cnn.n_train, cnn.n_val, cnn.steps_per_epoch) == \
        (160 + 4640 + 330, 1438, 359, 45)
    res = load(ROOT / "examples" / "residual_mlp.json")
    assert any(layer["type"] == "add" and len(layer["inputs"]) == 2
               for layer in res["model"]["layers"])
    _, mlp = validate_job(res)
    assert mlp.total_params == 13 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 3 + 3
    _, lstm = validate_job(load(ROOT / "examples" / "sequence_lstm.json"),
                           resolve_upload=sequences_info)
    # embedding 16*8; LSTM 4*(8*16 + 16*16 + 16); dense 16+1
    assert lstm.total_params == 16 * 8 + 4 * (8 * 16 + 16 * 16 + 16) + 17
    assert (lstm.n_train, lstm.n_val) == (800, 200)


def test_the_sequence_task_depends_on_order_only():
    x, y = example_module("make_sequences").make()
    assert x.dtype == np.int32 and x.shape == (1000, 20) and 0.4 < y.mean() < 0.6
    first, second = (x == 1).argmax(axis=1), (x == 2).argmax(axis=1)
    assert ((x == 1).sum(axis=1) == 1).all() and ((x == 2).sum(axis=1) == 1).all()
    np.testing.assert_array_equal(first < second, y == 1)


def test_the_uploaded_model_example_validates_at_the_door(tmp_path):
    from service.uploads.keras_file import read_keras_file

    example = example_module("upload_model")
    path = tmp_path / "m.keras"
    example.build().save(path)
    uploaded = read_keras_file(path.read_bytes(), 50 * 2**20).model
    _, plan = validate_job(example.job("m1", 2),
                           resolve_model=lambda i: uploaded if i == "m1" else None)
    assert plan.total_params == example.build().count_params() == 64 * 32 + 32 + 32 * 32 + 32 \
        + 32 * 10 + 10
    assert plan.epochs == 2
