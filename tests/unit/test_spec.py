"""Spec validation: every bad-input case names the field, the value and the fix."""

from __future__ import annotations

import copy

import pytest

from service.jobspec import Limits, SpecError, check_job, parse_spec, validate_job
from tests.helpers import lecture_spec, tiny_spec


def errors_of(data, limits=Limits()) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        validate_job(data, limits)
    return {d.loc: d.msg for d in info.value.details}


def with_(spec, mutate):
    spec = copy.deepcopy(spec)
    mutate(spec)
    return spec


def test_lecture_arithmetic():
    _, plan = validate_job(lecture_spec())
    assert plan.input_dim == 50 and plan.n_train == 200 and plan.batch_size == 5
    assert plan.steps_per_epoch == 40
    assert plan.total_updates == 40_000  # 1,000 epochs
    assert plan.total_params == 5_374
    assert plan.gradient_descent == "mini_batch"


@pytest.mark.parametrize("gd,batch_size,expected_bs,steps", [
    ("batch", None, 200, 1),
    ("stochastic", None, 1, 200),
    ("mini_batch", 40, 40, 5),
    (None, None, 32, 7),  # Keras's default batch size; ceil(200 / 32) = 7
])
def test_gradient_descent_forms(gd, batch_size, expected_bs, steps):
    spec = lecture_spec(epochs=10)
    spec["fit"].pop("batch_size")
    if batch_size:
        spec["fit"]["batch_size"] = batch_size
    if gd:
        spec["fit"]["gradient_descent"] = gd
    _, plan = validate_job(spec)
    assert (plan.batch_size, plan.steps_per_epoch, plan.total_updates) == (expected_bs, steps,
                                                                           steps * 10)
    assert plan.gradient_descent == (gd or "mini_batch")


def test_gradient_descent_conflicts_name_batch_size():
    errs = errors_of(lecture_spec(gradient_descent="stochastic", batch_size=5))
    assert "uses 1 sample per update, but batch_size is 5" in errs["fit.batch_size"]
    errs = errors_of(lecture_spec(gradient_descent="mini_batch", batch_size=200))
    assert "1 < batch_size < 200" in errs["fit.batch_size"]


def test_validation_split_changes_n_train():
    # The lecture example: 250 samples, 20% held out.
    _, plan = validate_job(lecture_spec(validation_split=0.2, batch_size=200))
    assert (plan.n_train, plan.n_val, plan.steps_per_epoch) == (200, 50, 1)
    assert plan.gradient_descent == "batch"
    errs = errors_of(lecture_spec(validation_split=0.2, batch_size=201))
    assert "201 is larger than the 200 training samples" in errs["fit.batch_size"]
    _, plan = validate_job(lecture_spec(validation_split=0.0, batch_size=250))
    assert (plan.n_train, plan.n_val, plan.gradient_descent) == (250, 0, "batch")


def test_unknown_activation_suggests_the_near_miss():
    errs = errors_of(with_(lecture_spec(), lambda s: s["model"]["layers"][1].update(
        activation="sigmoïd")))
    msg = errs["model.layers.1.activation"]
    assert "'sigmoïd' is not allowed" in msg and "did you mean 'sigmoid'" in msg
    assert "relu" in msg and "leaky_relu" in msg


def test_softmax_width_must_match_classes():
    errs = errors_of(with_(lecture_spec(), lambda s: s["model"]["layers"][2].update(units=9)))
    assert errs["model.layers.2.units"] == ("the output layer has 9 units but the dataset has 10 "
                                            "classes; set units to 10")


def test_binary_crossentropy_needs_one_sigmoid_unit():
    spec = tiny_spec()
    spec["model"]["layers"][1].update(units=2, activation="softmax")
    errs = errors_of(spec)
    assert "binary_crossentropy needs a 1-unit sigmoid output" in errs["model.layers.1.units"]
    spec = lecture_spec()
    spec["compile"]["loss"] = "binary_crossentropy"
    errs = errors_of(spec)
    assert "needs 2 classes, the dataset has 10" in errs["compile.loss"]


def test_regression_loss_on_classification_and_vice_versa():
    errs = errors_of(with_(lecture_spec(), lambda s: s["compile"].update(loss="huber")))
    assert "'huber' is a regression loss" in errs["compile.loss"]
    reg = tiny_spec(dataset={"kind": "sklearn", "name": "diabetes"},
                    compile={"loss": "sparse_categorical_crossentropy",
                             "optimizer": "adam", "metrics": ["accuracy"]})
    errs = errors_of(reg)
    assert "classification loss but the dataset is regression" in errs["compile.loss"]
    assert "a regression output has 1 unit" not in str(errs)  # the 1-unit output is fine
    assert "'sigmoid' squashes a regression output" in errs["model.layers.1.activation"]
    assert "accuracy needs a classification dataset" in errs["compile.metrics.0"]


@pytest.mark.parametrize("path,value,loc,words", [
    (("model", "layers", 0, "units"), 0, "model.layers.0.units", ["0 is out of range"]),
    (("model", "layers", 0, "units"), "many", "model.layers.0.units", ["integer"]),
    (("fit", "epochs"), -1, "fit.epochs", ["-1 is out of range"]),
    (("fit", "validation_split"), 1.5, "fit.validation_split", ["1.5 is out of range"]),
    (("compile", "optimizer", "name"), "adamm", "compile.optimizer.name",
     ["did you mean 'adam'"]),
    (("compile", "metrics"), ["acc"], "compile.metrics.0", ["'acc' is not allowed"]),
    (("dataset", "name"), "mnist", "dataset.name", ["'mnist' is not allowed", "spiral"]),
    (("dataset", "kind"), "url", "dataset", ["'url' is not a known type"]),
    (("model", "layers"), [], "model.layers", ["at least 1"]),
    (("model", "layers", 0, "type"), "conv3d", "model.layers.0", ["'conv3d' is not a known"]),
])
def test_field_errors_name_field_and_value(path, value, loc, words):
    spec = lecture_spec()
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errs = errors_of(spec)
    assert loc in errs, errs
    for word in words:
        assert word in errs[loc], errs[loc]


def test_missing_and_extra_fields():
    spec = lecture_spec()
    del spec["dataset"]
    spec["fit"]["epoch"] = 3
    errs = errors_of(spec)
    assert errs["dataset"] == "field required; add it to the spec"
    assert errs["fit.epoch"] == "unknown field; remove it or check its spelling"


def test_caps_are_configurable():
    errs = errors_of(lecture_spec(), Limits(max_params=5_000))
    assert "5,374 parameters, above the cap of 5,000" in errs["model.layers"]
    errs = errors_of(lecture_spec(epochs=11), Limits(max_epochs=10))
    assert "11 is above the cap of 10 epochs" in errs["fit.epochs"]
    spec = lecture_spec()
    spec["dataset"]["n_samples"] = 1000
    spec["fit"]["batch_size"] = 5
    assert "above the cap of 500" in errors_of(spec, Limits(max_samples=500))["dataset.n_samples"]


def test_optimizer_options_belong_to_their_optimizer():
    spec = lecture_spec()
    spec["compile"]["optimizer"] = {"name": "adam", "nesterov": True}
    assert "nesterov applies to sgd only" in errors_of(spec)["compile.optimizer"]
    spec["compile"]["optimizer"] = "rmsprop"  # shorthand
    assert parse_spec(spec).compile.optimizer.name == "rmsprop"


def test_early_stopping_monitor_needs_validation_data():
    spec = lecture_spec(validation_split=0.0)
    spec["fit"]["early_stopping"] = {"monitor": "val_loss", "patience": 3}
    assert "needs validation data" in errors_of(spec)["fit.early_stopping.monitor"]
    spec["fit"]["early_stopping"]["monitor"] = "val_auc"
    assert "is not logged" in errors_of(spec)["fit.early_stopping.monitor"]
    spec["fit"].update(validation_split=0.2, early_stopping={"monitor": "val_accuracy"})
    validate_job(spec)


def test_playground_sets_are_two_dimensional():
    spec = tiny_spec(dataset={"kind": "synthetic", "name": "xor", "n_features": 3})
    assert "is 2-D" in errors_of(spec)["dataset.n_features"]
    spec = lecture_spec()
    spec["dataset"].update(n_features=2, n_classes=10)
    spec["model"].pop("input_dim", None)
    assert "cannot separate 10 classes" in errors_of(spec)["dataset.n_features"]


def test_every_activation_loss_optimizer_and_metric_of_the_contract_parses():
    from service.jobspec import ACTIVATIONS, LOSSES, METRICS, OPTIMIZERS

    assert {"relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "gelu", "silu",
            "swish", "leaky_relu", "softplus"} <= set(ACTIVATIONS)
    assert set(LOSSES) == {"binary_crossentropy", "sparse_categorical_crossentropy",
                           "categorical_crossentropy", "mse", "mae", "huber"}
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
    assert set(METRICS) == {"accuracy", "mae", "mse", "auc", "precision", "recall"}


def test_check_job_without_upload_resolver_is_a_clear_error():
    spec = parse_spec(tiny_spec(dataset={"kind": "upload", "id": "abc"}))
    with pytest.raises(SpecError) as info:
        check_job(spec)
    assert info.value.details[0].loc == "dataset.id"


def test_non_object_body():
    with pytest.raises(SpecError) as info:
        parse_spec([1, 2])
    assert "must be a JSON object" in str(info.value)


def test_a_misspelt_layer_field_gets_did_you_mean_with_its_layers_own_fields():
    spec = tiny_spec()
    spec["dataset"] = {"kind": "sklearn", "name": "digits"}
    spec["model"]["layers"] = [
        {"type": "reshape", "target_shape": [8, 8, 1]},
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax", "use_bais": False}]
    errors = errors_of(spec)
    assert errors["model.layers.1.stride"].endswith("did you mean 'strides'?")
    assert errors["model.layers.3.use_bais"].endswith("did you mean 'use_bias'?")
    spec["model"]["layers"][1] = {"type": "conv2d", "filter": 4, "kernel_size": 3}
    assert errors_of(spec)["model.layers.1.filter"].endswith("did you mean 'filters'?")
    spec["model"]["layers"][1] = {"type": "conv2d", "filters": 4, "kernel_size": 3, "zz": 1}
    assert "did you mean" not in errors_of(spec)["model.layers.1.zz"]
