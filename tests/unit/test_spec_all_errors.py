"""A spec with several mistakes reports them all at once: the fields pydantic refuses, and the
cross-field rules run on the fields that did validate (service/jobspec/stand_in.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.jobspec import RULES, JobSpec, SpecError, humanize_all, validate_job
from service.jobspec.rules import OUTPUT
from service.jobspec.stand_in import data_path, stand_in
from service.jobspec.sweep_checks import validate_sweep
from tests.helpers import tiny_spec


def errors_of(spec: dict) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_job(spec)
    return info.value


def by_loc(exc: SpecError) -> dict:
    return {d.loc: d for d in exc.details}


def test_a_field_error_and_a_rule_error_come_together():
    spec = tiny_spec()
    spec["model"]["layers"][0]["activation"] = "rleu"
    spec["fit"]["batch_size"] = 500  # the circle set has 64 samples
    exc = errors_of(spec)
    assert [d.loc for d in exc.details] == ["model.layers.0.activation", "fit.batch_size"]
    act, bs = exc.details
    assert act.value == "rleu" and "did you mean 'relu'?" in act.msg
    assert bs.value == 500 and bs.msg == "500 is larger than the 64 training samples; use at " \
                                         "most 64"
    assert str(exc) == f"2 errors: model.layers.0.activation: {act.msg}; fit.batch_size: {bs.msg}"


def test_one_error_reads_as_before():
    spec = tiny_spec()
    spec["fit"]["epochs"] = 0
    exc = errors_of(spec)
    assert str(exc) == "fit.epochs: 0 is out of range: input should be greater than 0"


def test_a_rule_that_reads_a_refused_field_is_not_run():
    # The dataset's name is refused: whether 'mse' suits it is unknown, so no loss error (the
    # stand-in dataset is a classification set); the epoch cap reads no dataset and is kept.
    spec = tiny_spec()
    spec["dataset"]["name"] = "circel"
    spec["compile"]["loss"] = "mse"
    spec["fit"]["epochs"] = 10**5
    assert list(by_loc(errors_of(spec))) == ["dataset.name", "fit.epochs"]
    # The output layer's units refused: the output rules are skipped, the batch size is not.
    spec = tiny_spec()
    spec["model"]["layers"][1]["units"] = 0
    spec["compile"]["loss"] = "mse"
    spec["fit"]["batch_size"] = 500
    assert list(by_loc(errors_of(spec))) == ["model.layers.1.units", "fit.batch_size"]


def test_a_hidden_layers_mistake_keeps_the_output_rules():
    spec = tiny_spec()
    spec["model"]["layers"][0]["activation"] = "rleu"
    spec["model"]["layers"][1]["activation"] = "softmax"  # over 1 unit, and wrong for the loss
    locs = [d.loc for d in errors_of(spec).details]
    assert locs[0] == "model.layers.0.activation"
    assert set(locs[1:]) == {"model.layers.1.activation"}


def test_model_level_errors_unknown_and_missing_fields_all_reported():
    spec = tiny_spec()
    spec["compile"]["optimizer"]["momentum"] = 0.5  # adam has none
    spec["fit"]["epoch"] = spec["fit"].pop("epochs")  # a typo: unknown, and epochs missing
    spec["compile"]["loss"] = "mse"  # a regression loss on a 2-class set
    exc = errors_of(spec)
    assert set(by_loc(exc)) == {"compile.optimizer", "fit.epochs", "fit.epoch", "compile.loss"}
    assert str(exc).startswith("4 errors: ")
    assert "'mse' is a regression loss" in by_loc(exc)["compile.loss"].msg


@pytest.mark.parametrize("mutate", [
    lambda s: s["model"]["layers"][1].update(units=0),
    lambda s: s["model"]["layers"].__setitem__(0, {"type": "dnse", "units": 3}),
    lambda s: s.update(fit="abc"),
    lambda s: s.update(model="x"),
    lambda s: s["compile"].update(optimizer="adm"),
    lambda s: s["dataset"].update(n_samples="64"),
    lambda s: s.update(tags={"/bad": "x"}),
    lambda s: s["fit"].update(steps_per_execution=0.5),
], ids=["units", "layer-type", "fit-string", "model-string", "optimizer-name", "n-samples",
        "tag-key", "union"])
def test_one_mistake_gives_only_its_own_errors(mutate):
    """The stand-in never makes up an error: a valid spec with one field broken reports what
    field validation alone reports."""
    spec = tiny_spec()
    mutate(spec)
    with pytest.raises(ValidationError) as raw:
        JobSpec.model_validate(spec)
    assert errors_of(spec).details == humanize_all(raw.value.errors())


def test_the_stand_in_validates_and_names_what_it_replaced():
    spec = tiny_spec()
    spec["model"]["layers"][0]["activation"] = "rleu"
    spec["compile"]["optimizer"] = "adm"  # the shorthand: a string where the object goes
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    stand, replaced = stand_in(JobSpec, spec, info.value.errors())
    assert isinstance(stand, JobSpec)
    assert replaced == ["model.layers.0.activation", "compile.optimizer"]
    assert spec["model"]["layers"][0]["activation"] == "rleu"  # the caller's data untouched
    assert data_path(("model", "layers", 0, "dense", "units")) == ("model", "layers", 0, "units")
    assert data_path(("fit", "steps_per_execution", "int")) == ("fit", "steps_per_execution")


def test_every_rule_declares_the_fields_it_reads():
    fields = set(JobSpec.model_fields)
    for rule in RULES:
        assert rule.reads, rule.__name__
        for path in rule.reads:
            assert path == OUTPUT or path.split(".")[0] in fields, (rule.__name__, path)


# --- sweeps -----------------------------------------------------------------------------------


def sweep(base: dict, **extra) -> dict:
    return {"name": "s", "base": base, "parameters": {"fit.batch_size": [8, 16]}, **extra}


def sweep_errors(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_sweep(data)
    return [d.loc for d in info.value.details]


def test_a_sweeps_own_field_and_its_base_are_reported_together():
    base = tiny_spec()
    base["model"]["layers"][0]["activation"] = "rleu"
    assert sweep_errors(sweep(base, max_parallel=0)) == ["max_parallel",
                                                         "base.model.layers.0.activation"]


def test_a_bad_value_of_one_parameter_does_not_hide_another():
    data = sweep(tiny_spec())
    data["parameters"] = {"model.hidden_activation": ["relu", "rleu"], "fit.batch_size": [8, 500]}
    assert sweep_errors(data) == ["parameters.model.hidden_activation",
                                  "parameters.fit.batch_size"]


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path


ODD = [None, "x", -1, 0, 2.5, True, [], {}, {"type": "dense"}, "relu"]


def test_any_leaf_set_to_anything_gives_a_spec_error_and_no_made_up_one():
    """Every leaf of a valid spec, set to each odd value: validation ends in a SpecError (or
    passes). When field validation refuses the value, every error reported touches that
    field: the rules run on the rest, which is valid, and skip what read the stand-in."""
    import copy

    from service.jobspec.stand_in import touches

    base = tiny_spec()
    refused = 0
    for path in list(_leaves(base)):
        for odd in ODD:
            spec = copy.deepcopy(base)
            node = spec
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = odd
            try:
                JobSpec.model_validate(spec)
                field_ok = True
            except ValidationError:
                field_ok = False
            try:
                validate_job(spec)
                continue
            except SpecError as exc:
                details = exc.details
            if field_ok:
                continue
            refused += 1
            changed = ".".join(map(str, path))
            assert all(touches(d.loc, changed) for d in details), (changed, odd, details)
    assert refused > 100
