"""The sweep contract without a database: paths, grid expansion, epoch groups, errors."""

from __future__ import annotations

import copy
import json

import pytest

from service.jobspec import DatasetInfo, SpecError
from service.jobspec.sweep import apply_params, trial_name
from service.jobspec.sweep_checks import validate_sweep
from tests.helpers import ROOT, tiny_spec

LECTURE = json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())


def sweep(**change) -> dict:
    body = copy.deepcopy(LECTURE)
    body.update(change)
    return body


def errors_of(body) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        validate_sweep(body)
    return {d.loc: d.msg for d in exc.value.details}


def test_lecture_sweep_plan():
    spec, plan = validate_sweep(LECTURE)
    assert plan.total == 36 and plan.method == "grid"
    assert plan.param_order == ["fit.batch_size", "model.hidden_activation", "fit.epochs"]
    assert plan.configs[0] == {"fit.batch_size": 1, "model.hidden_activation": "sigmoid",
                               "fit.epochs": 10}
    assert plan.configs[-1] == {"fit.batch_size": 200, "model.hidden_activation": "tanh",
                                "fit.epochs": 200}
    # 12 configurations, each trained once to 200 epochs; 10 and 50 recorded from it.
    assert plan.share_epochs and len(plan.groups) == 12
    for group in plan.groups:
        assert [plan.configs[i]["fit.epochs"] for i in group] == [200, 50, 10]
        rest = {tuple((k, v) for k, v in plan.configs[i].items() if k != "fit.epochs")
                for i in group}
        assert len(rest) == 1


def test_max_trials_caps_a_grid_and_keeps_groups_within_it():
    _, plan = validate_sweep(sweep(max_trials=4))
    assert plan.total == 4
    assert all(i < 4 for g in plan.groups for i in g)
    # indices 0-2 are one configuration (ep 10, 50, 200); index 3 starts the next
    assert sorted(plan.groups[0]) == [0, 1, 2] and plan.groups[1] == [3]


@pytest.mark.parametrize("change, why", [
    ({"share_epochs": False}, "share_epochs is false"),
    ({"early_stopping": {"type": "median"}}, "pruning"),
    ({"parameters": {"fit.batch_size": [5, 40]}}, "fit.epochs is not swept"),
])
def test_epoch_sharing_is_off_when_it_would_change_results(change, why):
    _, plan = validate_sweep(sweep(**change))
    assert not plan.share_epochs and why in plan.share_epochs_why


def test_base_early_stopping_turns_epoch_sharing_off():
    body = sweep()
    body["base"]["fit"]["early_stopping"] = {"monitor": "val_loss", "patience": 3}
    _, plan = validate_sweep(body)
    assert not plan.share_epochs and "fit.early_stopping" in plan.share_epochs_why


def test_apply_params_paths_and_hidden_activation():
    base = tiny_spec()
    base["model"]["layers"].insert(0, {"type": "dense", "units": 8, "activation": "relu"})
    out = apply_params(base, {"model.hidden_activation": "tanh", "fit.batch_size": 4,
                              "model.layers.0.units": 3,
                              "compile.optimizer.learning_rate": 0.5})
    assert [la["activation"] for la in out["model"]["layers"]] == ["tanh", "tanh", "sigmoid"]
    assert out["model"]["layers"][0]["units"] == 3 and out["fit"]["batch_size"] == 4
    assert out["compile"]["optimizer"]["learning_rate"] == 0.5
    assert base["fit"]["batch_size"] == 16  # the base is not touched
    with pytest.raises(KeyError):
        apply_params(base, {"model.layers.7.units": 3})


def test_trial_names_are_short_and_in_the_users_order():
    assert trial_name({"fit.batch_size": 5, "model.hidden_activation": "relu",
                       "fit.epochs": 50}) == "bs=5 act=relu ep=50"
    assert trial_name({"fit.epochs": 50, "fit.batch_size": 5},
                      ["fit.batch_size", "fit.epochs"]) == "bs=5 ep=50"
    assert trial_name({"compile.optimizer.learning_rate": 0.001,
                       "model.layers.0.units": 8}) == "lr=0.001 units0=8"


def test_errors_name_the_parameter_the_value_and_the_fix():
    errs = errors_of(sweep(parameters={"fit.batch_size": [5, 201]}))
    assert "201 is larger than the 200 training samples; use at most 200" in \
        errs["parameters.fit.batch_size"]
    errs = errors_of(sweep(method="random", parameters={
        "compile.optimizer.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}},
        max_trials=5))
    assert "log range needs low > 0" in errs["parameters.compile.optimizer.learning_rate"]
    errs = errors_of(sweep(parameters={"fit.epochs": {"type": "int", "low": 1, "high": 9}}))
    assert "grid needs explicit values" in errs["parameters.fit.epochs"]
    errs = errors_of(sweep(repeats=3, parameters={"fit.seed": [1, 2]}))
    assert "repeats" in errs
    errs = errors_of(sweep(parameters={"fit.batch_size": "5"}))
    assert "give a list of values" in errs["parameters.fit.batch_size"]
    errs = errors_of(sweep(base={**LECTURE["base"], "fit": {"batch_size": 5, "epochs": 3}}))
    assert "validation data" in errs["objective.metric"]
    errs = errors_of(sweep(max_parallel=0))
    assert "max_parallel" in errs


def test_random_and_tpe_need_max_trials_and_check_range_ends():
    body = sweep(method="tpe", parameters={"fit.batch_size": {"type": "int", "low": 1,
                                                              "high": 500}})
    errs = errors_of(body)
    assert "max_trials" in errs
    assert "500 is larger than the 200 training samples" in errs["parameters.fit.batch_size"]
    _, plan = validate_sweep(sweep(method="random", max_trials=7, parameters={
        "fit.batch_size": {"type": "int", "low": 1, "high": 200, "log": True},
        "model.hidden_activation": {"type": "categorical", "values": ["relu", "tanh"]}}))
    assert plan.total == 7 and plan.configs is None and not plan.share_epochs
    assert plan.distributions["fit.batch_size"] == {"type": "int", "low": 1, "high": 200,
                                                    "log": True, "step": 1}


# --- layers of a graph: conv filters and kernels, recurrent units --------------------------

SEQUENCES = DatasetInfo(100, 64, "classification", 10, input_shape=(8, 8))


def sequence_sweep(parameters: dict) -> dict:
    base = tiny_spec(dataset={"kind": "upload", "id": "seq"})
    base["model"] = {"layers": [
        {"type": "conv1d", "filters": 4, "kernel_size": 3, "padding": "same"},
        {"type": "conv1d", "filters": 8, "kernel_size": 3},
        {"type": "lstm", "units": 8, "return_sequences": True},
        {"type": "bidirectional", "layer": {"type": "gru", "units": 4}},
        {"type": "dense", "units": 10, "activation": "softmax"}]}
    base["compile"] = {"loss": "sparse_categorical_crossentropy", "optimizer": "adam"}
    base["fit"]["validation_split"] = 0.2
    return {"name": "seq", "base": base, "parameters": parameters}


def test_a_sweep_varies_conv_and_recurrent_layers():
    params = {"model.layers.1.filters": [4, 8], "model.layers.0.kernel_size": [2, 3],
              "model.layers.2.units": [4, 8], "model.layers.3.layer.units": [2, 4]}
    _, plan = validate_sweep(sequence_sweep(params), resolve_upload=lambda _: SEQUENCES)
    assert plan.total == 16
    assert plan.configs[-1] == {"model.layers.1.filters": 8, "model.layers.0.kernel_size": 3,
                                "model.layers.2.units": 8, "model.layers.3.layer.units": 4}
    assert trial_name(plan.configs[0]) == "filters1=4 kernel_size0=2 units2=4 units3=2"


@pytest.mark.parametrize("path, value, words", [
    ("model.layers.1.kernel_size", 9, "a 9 kernel with padding 'valid' does not fit its 8 "
                                      "input; use padding 'same' or kernel_size at most 8"),
    ("model.layers.0.kernel_size", 0, "greater than 0"),
    ("model.layers.2.units", 0, "greater than 0"),
    ("model.layers.3.layer.units", -1, "greater than 0"),
])
def test_a_sweep_value_a_layer_cannot_take_is_named(path, value, words):
    with pytest.raises(SpecError) as exc:
        validate_sweep(sequence_sweep({path: [4, value]}), resolve_upload=lambda _: SEQUENCES)
    errors = {d.loc: d.msg for d in exc.value.details}
    assert list(errors) == [f"parameters.{path}"], errors
    assert words in errors[f"parameters.{path}"] and f"={value}" in errors[f"parameters.{path}"]
