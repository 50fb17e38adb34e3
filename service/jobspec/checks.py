"""Field-level parsing, then the cross-field rules of :mod:`.rules`.

:func:`check_job` works out the dataset's shape and the network's output once (a
:class:`~.rules.Facts`), runs every rule in :data:`~.rules.RULES` over it, and returns the
lecture's quantities as a :class:`TrainingPlan` (input_dim, n_train, steps_per_epoch,
total_updates, total_params, gradient_descent) or raises one :class:`SpecError` naming every
offending field.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pydantic import ValidationError

from service.jobspec.errors import ErrorDetail, SpecError, humanize_all
from service.jobspec.memory import MB, estimate
from service.jobspec.models import JobSpec
from service.jobspec.plan import DEFAULT_LIMITS, Limits, TrainingPlan
from service.jobspec.rules import OUTPUT, RULES, Facts, Rule, facts_of, plan_of
from service.jobspec.shapes import DatasetInfo, ModelResolver, UploadResolver, dataset_info_for
from service.jobspec.stand_in import stand_in, touches

log = logging.getLogger(__name__)


def parse_spec(data: Any) -> JobSpec:
    """Field-level validation; raises SpecError with one detail per offending field."""
    if not isinstance(data, dict):
        raise SpecError([ErrorDetail("(body)", f"a job spec must be a JSON object, got "
                                               f"{type(data).__name__}")])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(humanize_all(exc.errors())) from None


def _with_memory(f: Facts) -> TrainingPlan:
    plan = plan_of(f)
    return dataclasses.replace(plan, memory_mb=round(estimate(f.spec, plan).total / MB, 1))


# A dataset for the rules that do not read it, when field validation replaced the spec's.
_STAND_IN_INFO = DatasetInfo(n_samples=200, n_features=2, task="classification", n_classes=2)


def _read_paths(rule: Rule, facts: Facts) -> list[str]:
    """The fields ``rule`` reads; :data:`OUTPUT` stands for every layer's type and wiring and
    the units and activation from the layers that set the output's on."""
    paths = []
    for path in rule.reads:  # type: ignore[attr-defined]
        if path != OUTPUT:
            paths.append(path)
            continue
        graph, layers = facts.graph, facts.spec.model.layers or []
        paths.append("model.uploaded")
        paths += [f"model.layers.{i}.{field}" for i in range(len(layers))
                  for field in ("type", "name", "inputs")]
        ends = [i for i in (graph.units_index, graph.activation_index)
                if i is not None] if graph else []
        if graph is None or graph.units_index is None:
            paths.append("dataset")  # the output's units may be the input's
        for i in range(min(ends, default=0), len(layers)):
            paths += [f"model.layers.{i}.{field}"
                      for field in ("units", "activation", "filters", "layer")]
    return paths


def rule_errors(spec: JobSpec, limits: Limits = DEFAULT_LIMITS,
                resolve_upload: UploadResolver | None = None,
                replaced: tuple[str, ...] | list[str] = (),
                resolve_model: ModelResolver | None = None) -> tuple[list[ErrorDetail],
                                                                     Facts | None]:
    """Every rule's errors, and the facts they looked at (None when the dataset is unknown).

    ``resolve_model`` looks up ``model.uploaded`` (an uploaded model's layers and input).
    ``replaced``: the fields a stand-in spec (:mod:`.stand_in`) holds in place of values that
    failed field validation; rules reading one of them are skipped.
    """
    errors: list[ErrorDetail] = []
    if any(touches(r, "dataset") for r in replaced):
        info = _STAND_IN_INFO
    else:
        info = dataset_info_for(spec, resolve_upload, errors)
        if info is None:
            return errors, None
    facts = facts_of(spec, info, limits, resolve_model)
    for rule in RULES:
        if replaced and any(touches(r, p) for r in replaced for p in _read_paths(rule, facts)):
            continue
        errors.extend(d for d in rule(facts) if not any(touches(r, d.loc) for r in replaced))
    return errors, facts


def check_job(spec: JobSpec, limits: Limits = DEFAULT_LIMITS,
              resolve_upload: UploadResolver | None = None,
              resolve_model: ModelResolver | None = None) -> TrainingPlan:
    """Cross-field checks; returns the plan or raises SpecError naming each field."""
    errors, facts = rule_errors(spec, limits, resolve_upload, resolve_model=resolve_model)
    if errors or facts is None:
        raise SpecError(errors)
    return _with_memory(facts)


def validate_job(data: Any, limits: Limits = DEFAULT_LIMITS,
                 resolve_upload: UploadResolver | None = None,
                 resolve_model: ModelResolver | None = None) -> tuple[JobSpec, TrainingPlan]:
    """Field validation, then the cross-field rules. A spec with several mistakes gets them all
    in one SpecError: when fields fail, the rules still run on the fields that did validate
    (a stand-in holds a valid value in place of each failing one; rules that read a replaced
    field are skipped)."""
    if not isinstance(data, dict):
        parse_spec(data)  # raises the "(body)" error
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raw = exc.errors()
        details = humanize_all(raw)
        try:
            stand, replaced = stand_in(JobSpec, data, raw)
            if stand is not None:
                details += rule_errors(stand, limits, resolve_upload, replaced,
                                       resolve_model)[0]
        except Exception:  # the field errors alone still make the 422
            log.warning("the cross-field checks beside field errors failed", exc_info=True)
        raise SpecError(details) from None
    return spec, check_job(spec, limits, resolve_upload, resolve_model)
