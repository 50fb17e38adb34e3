"""Strict types and the validated spec: what is stored is what is validated, again and again.

A JSON boolean or string is not a number and a string is not a boolean, in JSON and YAML
bodies alike, for the job spec and the sweep spec; each error names the path, the value and
the fix. The dump of a validated spec (what POST /jobs stores, defaults filled in) validates to
itself and to the same plan, as the worker re-validates the stored spec.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from service.api.body import load_yaml
from service.api.openapi import JOB_EXAMPLE, SWEEP_EXAMPLE
from service.jobspec import RULES, SpecError, validate_job
from service.jobspec.sweep_checks import parse_sweep, validate_sweep
from tests.helpers import ROOT, diverging_spec, lecture_spec, sequences_info, tiny_spec

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".json", ".yaml"))


def load(path):
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(
        path.read_text())


def job_specs() -> list[tuple[str, dict]]:
    out = []
    for path in EXAMPLES:
        data = load(path)
        out.append((path.name, data.get("base", data)))
    out += [("JOB_EXAMPLE", JOB_EXAMPLE), ("SWEEP_EXAMPLE.base", SWEEP_EXAMPLE["base"]),
            ("tiny_spec", tiny_spec()), ("diverging_spec", diverging_spec()),
            ("lecture_spec", lecture_spec())]
    return out


SPECS = job_specs()


def details_of(data, validate=validate_job) -> dict[str, dict]:
    with pytest.raises(SpecError) as info:
        validate(data)
    return {d.loc: d.as_dict() for d in info.value.details}


def with_(spec, mutate):
    spec = copy.deepcopy(spec)
    mutate(spec)
    return spec


# --- the validated dump ----------------------------------------------------------------------


@pytest.mark.parametrize("data", [d for _, d in SPECS], ids=[n for n, _ in SPECS])
def test_validated_dump_revalidates_to_itself_and_the_same_plan(data):
    # examples/sequence_lstm.json trains on an upload: the .npz its script writes.
    spec, plan = validate_job(data, resolve_upload=sequences_info)
    dumped = spec.model_dump(mode="json")
    json.loads(json.dumps(dumped))  # what JSONB stores
    again, plan_again = validate_job(dumped, resolve_upload=sequences_info)
    assert again.model_dump(mode="json") == dumped
    assert again == spec
    assert plan_again == plan
    # Every default is filled in; what the user wrote is kept.
    assert set(dumped) == {"name", "experiment", "dataset", "model", "compile", "fit",
                           "resources", "tags"}
    assert written_in(data, dumped)


def written_in(given, dumped) -> bool:
    """Every value the user wrote is in the dump (which adds the defaults)."""
    if isinstance(given, dict) and isinstance(dumped, dict):
        return all(k in dumped and written_in(v, dumped[k]) for k, v in given.items())
    if isinstance(given, list) and isinstance(dumped, list):
        return len(given) == len(dumped) and all(map(written_in, given, dumped))
    if isinstance(given, str) and isinstance(dumped, dict):  # "optimizer": "adam"
        return dumped.get("name") == given
    return given == dumped and type(given) in (type(dumped), int)


def test_the_stored_spec_keeps_what_readers_of_job_spec_look_up():
    dumped = validate_job(tiny_spec())[0].model_dump(mode="json")
    assert (dumped.get("fit") or {}).get("seed") == 0  # sweeps, the sweep report
    assert dumped["compile"]["optimizer"] == {"name": "adam", "learning_rate": 0.05,
                                              "momentum": 0.0, "nesterov": False,
                                              "weight_decay": None}
    shorthand = with_(tiny_spec(), lambda s: s["compile"].update(optimizer="adam"))
    assert validate_job(shorthand)[0].model_dump(mode="json")["compile"]["optimizer"]["name"] \
        == "adam"


def test_sweep_dump_revalidates_to_itself():
    for data in [load(p) for p in EXAMPLES if "base" in load(p)] + [SWEEP_EXAMPLE]:
        sweep, plan = validate_sweep(data)
        dumped = sweep.model_dump(mode="json")
        sweep2, plan2 = validate_sweep(dumped)
        assert sweep2.model_dump(mode="json") == dumped and plan2 == plan


# --- strict types ----------------------------------------------------------------------------


def test_a_boolean_is_not_an_integer():
    d = details_of(with_(tiny_spec(), lambda s: s["fit"].update(epochs=True)))["fit.epochs"]
    assert d["value"] is True
    assert d["msg"] == ("expected an integer, got true (a boolean); write a whole number such "
                        "as 100")


def test_a_string_is_not_a_number():
    d = details_of(with_(tiny_spec(), lambda s: s["model"]["layers"][0].update(units="64")))
    assert d["model.layers.0.units"]["msg"] == \
        'expected an integer, got "64" (a string); write 64 without quotes'
    d = details_of(with_(tiny_spec(),
                         lambda s: s["compile"]["optimizer"].update(learning_rate="0.1")))
    assert d["compile.optimizer.learning_rate"]["msg"] == \
        'expected a number, got "0.1" (a string); write 0.1 without quotes'
    d = details_of(with_(tiny_spec(), lambda s: s["dataset"].update(n_samples=64.0)))
    assert d["dataset.n_samples"]["msg"] == \
        "expected an integer, got 64.0 (a decimal number); write 64"


def test_a_string_is_not_a_boolean():
    d = details_of(with_(tiny_spec(), lambda s: s["model"]["layers"][0].update(use_bias="true")))
    assert d["model.layers.0.use_bias"]["msg"] == \
        'expected true or false, got "true" (a string); write true without quotes'
    d = details_of(with_(tiny_spec(), lambda s: s["fit"].update(shuffle=1)))
    assert "expected true or false, got 1 (an integer)" in d["fit.shuffle"]["msg"]


def test_an_integer_is_still_a_float():
    spec, _ = validate_job(with_(tiny_spec(), lambda s: s["compile"]["optimizer"].update(
        learning_rate=1)))
    assert spec.compile.optimizer.learning_rate == 1.0
    assert isinstance(spec.compile.optimizer.learning_rate, float)


def test_a_union_reports_once_under_the_field_path():
    d = details_of(with_(tiny_spec(), lambda s: s["fit"].update(steps_per_execution=True)))
    assert list(d) == ["fit.steps_per_execution"]
    assert d["fit.steps_per_execution"]["msg"].startswith(
        "expected an integer or 'auto', got true (a boolean)")


def test_a_number_is_not_a_string():
    d = details_of(with_(tiny_spec(), lambda s: s.update(tags={"owner": 7})))
    assert d["tags.owner"]["msg"] == 'expected a string, got 7 (an integer); put it in quotes: "7"'


YAML_SPEC = """
name: yaml-strict
dataset: {kind: synthetic, name: circle, n_samples: 64}
model:
  layers:
    - {type: dense, units: "4", activation: relu, use_bias: "true"}
    - {type: dense, units: 1, activation: sigmoid}
compile: {loss: binary_crossentropy, optimizer: {name: adam, learning_rate: "0.05"}}
fit: {epochs: true, batch_size: 16}
"""


@pytest.mark.parametrize("loader", [yaml.safe_load, load_yaml], ids=["safe_load", "load_yaml"])
def test_yaml_bodies_are_as_strict_as_json(loader):
    data = loader(YAML_SPEC)
    assert details_of(data) == details_of(json.loads(json.dumps(data)))
    assert set(details_of(data)) == {"model.layers.0.units", "model.layers.0.use_bias",
                                     "compile.optimizer.learning_rate", "fit.epochs"}


def test_yaml_exponent_floats_are_numbers_in_a_body():
    # PyYAML's YAML 1.1 reads 1e-3 as a string; a YAML body reads it as JSON would.
    text = YAML_SPEC.replace('"0.05"', "1e-3").replace('"4"', "4").replace('"true"', "true") \
        .replace("epochs: true", "epochs: 2")
    spec, _ = validate_job(load_yaml(text))
    assert spec.compile.optimizer.learning_rate == 0.001
    assert load_yaml("a: 64\nb: '1e3'\nc: 1.5") == {"a": 64, "b": "1e3", "c": 1.5}


def sweep(**over) -> dict:
    return {"name": "s", "base": tiny_spec(), "parameters": {"fit.batch_size": [4, 8]},
            "objective": {"metric": "loss"}, **over}


@pytest.mark.parametrize("field,value,msg", [
    ("max_trials", "20", 'expected an integer, got "20" (a string); write 20 without quotes'),
    ("max_parallel", True, "expected an integer, got true (a boolean)"),
    ("repeats", 2.0, "expected an integer, got 2.0 (a decimal number); write 2"),
    ("seed", "1", 'expected an integer, got "1" (a string)'),
    ("share_epochs", "false",
     'expected true or false, got "false" (a string); write false without quotes'),
])
def test_sweep_fields_are_strict(field, value, msg):
    d = details_of(sweep(**{field: value}), parse_sweep)
    assert d[field]["msg"].startswith(msg) and d[field]["value"] == value


def test_sweep_ranges_are_strict_and_name_the_range_field():
    d = details_of(sweep(method="random", max_trials=3, parameters={
        "compile.optimizer.learning_rate": {"type": "float", "low": "0.001", "high": 1,
                                            "log": "true"},
        "fit.batch_size": {"type": "int", "low": 2.0, "high": 8, "step": True}}), parse_sweep)
    assert set(d) == {"parameters.compile.optimizer.learning_rate.low",
                      "parameters.compile.optimizer.learning_rate.log",
                      "parameters.fit.batch_size.low", "parameters.fit.batch_size.step"}
    assert "write 0.001 without quotes" in d["parameters.compile.optimizer.learning_rate.low"][
        "msg"]
    # An int is a float: {"type": "float", "low": 1, "high": 2} is a range of floats.
    validate_sweep(sweep(method="random", max_trials=3, parameters={
        "compile.optimizer.learning_rate": {"type": "float", "low": 1, "high": 2}}))


def test_check_job_is_small_named_rules():
    names = {r.__name__ for r in RULES}
    assert {"softmax_width_vs_classes", "binary_crossentropy_output", "loss_vs_task",
            "metrics_vs_task", "batch_size_vs_training_set", "gradient_descent_vs_batch_size",
            "early_stopping_monitor", "param_cap", "epoch_cap", "sample_cap"} <= names
