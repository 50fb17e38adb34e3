"""The sweep at the door: :func:`validate_sweep` checks a sweep the way
:func:`service.jobspec.validate_job` checks a job. Every grid configuration is applied to the
base and validated as a job, so a batch size larger than the training set is refused before
any trial runs, with the parameter's path in the error. It returns the :class:`SweepPlan`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from service.jobspec.checks import parse_spec, validate_job
from service.jobspec.errors import ErrorDetail, SpecError, humanize_all
from service.jobspec.memory import MB, estimate
from service.jobspec.models import ACTIVATIONS, JobSpec
from service.jobspec.plan import DEFAULT_LIMITS, Limits, TrainingPlan
from service.jobspec.shapes import DatasetInfo, ModelResolver
from service.jobspec.stand_in import touches
from service.jobspec.sweep import (
    HIDDEN_ACTIVATION,
    MAX_SWEEP_JOBS,
    SweepPlan,
    SweepSpec,
    apply_params,
    distribution_of,
    fmt_value,
)


def parse_sweep(data: Any) -> SweepSpec:
    if not isinstance(data, dict):
        raise SpecError([ErrorDetail("(body)", "a sweep spec must be a JSON object, got "
                                     f"{type(data).__name__}")])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        params = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
        raise SpecError(_dedupe(humanize_all([_parameter_error(e, params)
                                              for e in exc.errors()
                                              if _keep_error(e, params)]))) from None


def _base_errors(data: Any) -> list[ErrorDetail]:
    """The base's field errors, named ``base.<path>`` (none when it is not an object: the
    sweep's own validation says so)."""
    base = data.get("base") if isinstance(data, dict) else None
    if not isinstance(base, dict):
        return []
    try:
        parse_spec(base)
    except SpecError as exc:
        return [dataclasses.replace(d, loc=f"base.{d.loc}") for d in exc.details]
    return []


_SPACE_HINT = ('give a list of values, or {"type": "float"|"int", "low": ..., "high": ...} / '
               '{"type": "categorical", "values": [...]}')


def _keep_error(err: dict, params: dict) -> bool:
    """Of the two forms a parameter may take (a list, a range object), keep the errors of the
    form the user wrote; keep both for a value that is neither."""
    loc = err["loc"]
    if loc[:1] != ("parameters",) or len(loc) < 3:
        return True
    value = params.get(loc[1])
    if isinstance(value, list):
        return str(loc[2]).startswith("list[")
    if isinstance(value, dict):
        return str(loc[2]).startswith("tagged-union[")
    return str(loc[2]).startswith("list[")  # one "give a list ..." error


def _parameter_error(err: dict, params: dict) -> dict:
    """``parameters.<path>.<member>.<tag>.low`` -> ``parameters.<path>.low``; a value that is
    neither a list nor a range is told both forms."""
    loc = err["loc"]
    if loc[:1] != ("parameters",) or len(loc) < 3:
        return err
    rest = list(loc[3:])
    if str(loc[2]).startswith("tagged-union[") and rest[:1] and rest[0] in ("float", "int",
                                                                            "categorical"):
        rest = rest[1:]
    err = {**err, "loc": (*loc[:2], *rest)}
    if not isinstance(params.get(loc[1]), (list, dict)):
        err = {**err, "type": "value_error", "msg": f"{err['input']!r} is not a search space; "
               f"{_SPACE_HINT}"}
    return err


def _dedupe(details: list[ErrorDetail]) -> list[ErrorDetail]:
    seen, out = set(), []
    for d in details:
        key = (d.loc, d.msg)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def validate_sweep(data: Any, limits: Limits = DEFAULT_LIMITS,
                   resolve_upload: Callable[[str], DatasetInfo | None] | None = None,
                   resolve_model: ModelResolver | None = None) -> tuple[SweepSpec, SweepPlan]:
    """Field and cross-field checks of a sweep, then its plan.

    The sweep's own fields, the base's fields and the parameters' spaces are independent:
    their errors are reported together. The parameters' values are checked against the base
    (each applied to it and validated as a job) only once the base is valid.

    Raises:
        SpecError: naming each offending field.
    """
    try:
        sweep = parse_sweep(data)
    except SpecError as exc:
        raise SpecError(exc.details + _base_errors(data)) from None
    errors = _base_errors(data) + _activation_errors(sweep)
    if "fit.seed" in sweep.parameters and sweep.repeats > 1:
        errors.append(ErrorDetail("repeats", "repeats sets fit.seed per run, and fit.seed is "
                                  "also swept; use one or the other", sweep.repeats))
    distributions = {path: distribution_of(space) for path, space in sweep.parameters.items()}
    errors += _range_errors(distributions)
    # A parameter whose space is wrong already is not checked again value by value.
    if any(d.loc.startswith("base.") for d in errors):
        raise SpecError(_dedupe(errors))
    base_spec = parse_spec(sweep.base)

    trials = _TrialCheck(sweep, limits, resolve_upload, errors, resolve_model=resolve_model)
    configs: list[dict] | None = None
    if sweep.method == "grid":
        configs, specs, total = _check_grid(trials, distributions)
    else:
        specs, total = _check_sampled(trials, distributions)
    if errors:
        raise SpecError(_dedupe(errors))

    _check_objective(sweep, [s for s in specs if s is not None] or [base_spec], errors)
    if errors:
        raise SpecError(errors)

    share, why, groups = _epoch_groups(sweep, configs, specs, total)
    pack, pack_why, packs = _packs(sweep, specs, [trials.plans.get(id(s)) for s in specs],
                                   total, groups, limits)
    return sweep, SweepPlan(method=sweep.method, param_order=list(sweep.parameters),
                            total=total, repeats=sweep.repeats, distributions=distributions,
                            configs=configs, groups=groups, share_epochs=share,
                            share_epochs_why=why, pack=pack, pack_why=pack_why, packs=packs)


def _activation_errors(sweep: SweepSpec) -> list[ErrorDetail]:
    """``model.hidden_activation`` takes names: a list or a categorical of known ones."""
    space = sweep.parameters.get(HIDDEN_ACTIVATION)
    if space is None:
        return []
    loc = f"parameters.{HIDDEN_ACTIVATION}"
    values = space if isinstance(space, list) else getattr(space, "values", None)
    if values is None:
        return [ErrorDetail(loc, "activations are names: give a list or a categorical")]
    return [ErrorDetail(loc, f"{v!r} is not an activation; expected one of: "
                        f"{', '.join(ACTIVATIONS)}", v) for v in values if v not in ACTIVATIONS]


def _range_errors(distributions: dict[str, dict]) -> list[ErrorDetail]:
    """A float or int range's bounds, log scale and step."""
    errors = []
    for path, dist in distributions.items():
        if dist["type"] not in ("float", "int"):
            continue
        if dist["low"] > dist["high"]:
            errors.append(ErrorDetail(f"parameters.{path}", f"low {dist['low']} is above "
                                      f"high {dist['high']}; swap them"))
        if dist.get("log") and dist["low"] <= 0:
            errors.append(ErrorDetail(f"parameters.{path}", f"a log range needs low > 0, "
                                      f"got {dist['low']}", dist["low"]))
        if dist.get("log") and dist.get("step") not in (None, 1):
            errors.append(ErrorDetail(f"parameters.{path}", "log and step cannot be "
                                      "combined; drop one"))
    return errors


@dataclasses.dataclass
class _TrialCheck:
    """The base validated as a job with parameter values applied: errors are appended to
    ``errors`` (on the parameter that caused them), plans kept by ``id`` of the spec."""

    sweep: SweepSpec
    limits: Limits
    resolve_upload: Callable[[str], DatasetInfo | None] | None
    errors: list[ErrorDetail]
    plans: dict[int, TrainingPlan] = dataclasses.field(default_factory=dict)
    resolve_model: ModelResolver | None = None

    def __call__(self, params: dict, loc: str) -> JobSpec | None:
        """The validated spec, or None with its errors on ``loc`` (or the parameter's path)."""
        try:
            spec_dict = apply_params(self.sweep.base, params)
        except KeyError as exc:
            path, why = exc.args
            self.errors.append(ErrorDetail(f"parameters.{path}", f"{path!r} is not a field of "
                                           f"the job spec: {why}", path))
            return None
        try:
            parsed, job_plan = validate_job(spec_dict, self.limits, self.resolve_upload,
                                            self.resolve_model)
        except SpecError as exc:
            shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
            self.errors.extend(_blamed(d, params, loc, shown) for d in exc.details)
            return None
        self.plans[id(parsed)] = job_plan
        return parsed


def _blamed(d: ErrorDetail, params: dict, loc: str, shown: str) -> ErrorDetail:
    """A job's error, told on the swept parameter that caused it (``loc`` when none did)."""
    # The error's field is the parameter, lies inside it, or holds it (a layer's shape error).
    where = next((p for p in params if d.loc == p or touches(d.loc, p)
                  or (p == HIDDEN_ACTIVATION and d.loc.endswith(".activation"))), None)
    if where is None and len(params) == 1:
        where = next(iter(params))
    prefix = f"parameters.{where}" if where else loc
    msg = d.msg
    if "unknown field" in d.msg:
        msg = f"{d.loc!r} is not a field of the job spec; check its spelling"
    return ErrorDetail(prefix, f"with {shown}: {d.loc}: {msg}", d.value)


def _check_grid(trials: _TrialCheck, distributions: dict[str, dict]
                ) -> tuple[list[dict], list[JobSpec | None], int]:
    """A grid's values: each on its own first (short errors that name the value), then every
    configuration (values that only clash together), reported for the first few. Returns the
    configurations, their specs (None where invalid) and the trial count."""
    sweep, errors = trials.sweep, trials.errors
    ranges = [p for p, d in distributions.items() if d["type"] != "categorical"]
    for path in ranges:
        errors.append(ErrorDetail(f"parameters.{path}", "a grid needs explicit values; give "
                                  "a list, or use method 'random' or 'tpe' for a range"))
    if ranges:
        raise SpecError(_dedupe(errors))
    paths = list(distributions)
    n = math.prod(len(distributions[p]["values"]) for p in paths)
    if n * sweep.repeats > MAX_SWEEP_JOBS:
        raise SpecError(_dedupe(errors) + [ErrorDetail(
            "parameters", f"the grid has {n} configurations x {sweep.repeats} repeats = "
            f"{n * sweep.repeats} jobs, above the cap of {MAX_SWEEP_JOBS}; use fewer values "
            "or method 'random' with max_trials")])
    bad = {d.loc.removeprefix("parameters.") for d in errors}
    for path in paths:
        if path in bad:
            continue
        for v in distributions[path]["values"]:
            trials({path: v}, f"parameters.{path}")
    if errors:
        raise SpecError(_dedupe(errors))
    configs = [dict(zip(paths, combo)) for combo in
               itertools.product(*(distributions[p]["values"] for p in paths))]
    specs = [trials(c, "parameters") for c in configs]
    if len(errors) > 5:
        more = len(errors) - 5
        errors[5:] = [ErrorDetail("parameters", f"... and {more} more configurations are "
                                  "invalid in the same way")]
    return configs, specs, min(n, sweep.max_trials or n)


def _check_sampled(trials: _TrialCheck, distributions: dict[str, dict]
                   ) -> tuple[list[JobSpec | None], int]:
    """A random or TPE sweep: max_trials, and every value a sampler could pick, checked at
    its extremes one parameter at a time. Returns the specs checked and the trial count."""
    sweep, errors = trials.sweep, trials.errors
    if sweep.max_trials is None:
        errors.append(ErrorDetail("max_trials", f"method {sweep.method!r} samples until "
                                  "max_trials; set it (e.g. 20)"))
    elif sweep.max_trials * sweep.repeats > MAX_SWEEP_JOBS:
        errors.append(ErrorDetail("max_trials", f"{sweep.max_trials} trials x "
                                  f"{sweep.repeats} repeats is above the cap of "
                                  f"{MAX_SWEEP_JOBS} jobs", sweep.max_trials))
    specs = []
    bad = {d.loc.removeprefix("parameters.") for d in errors}
    for path, dist in distributions.items():
        if path in bad:
            continue
        values = dist["values"] if dist["type"] == "categorical" else [dist["low"],
                                                                       dist["high"]]
        for v in values:
            specs.append(trials({path: v}, f"parameters.{path}"))
    return specs, sweep.max_trials or 0


def _check_objective(sweep: SweepSpec, specs: list, errors: list[ErrorDetail]) -> None:
    metric = sweep.objective.metric
    base = metric.removeprefix("val_")
    for spec in specs:
        known = {"loss", *spec.compile.metrics}
        if base not in known:
            errors.append(ErrorDetail("objective.metric", f"{metric!r} is not logged by the "
                                      f"trials; use one of: {', '.join(sorted(known))} (or their "
                                      "val_ twins when fit.validation_split > 0)", metric))
            return
        if metric.startswith("val_") and spec.fit.validation_split <= 0:
            errors.append(ErrorDetail("objective.metric", f"{metric!r} needs validation data, "
                                      "but fit.validation_split is 0; set base.fit."
                                      f"validation_split (e.g. 0.2) or use {base!r}", metric))
            return


def _epoch_groups(sweep: SweepSpec, configs: list[dict] | None, specs: list, total: int
                  ) -> tuple[bool, str, list[list[int]] | None]:
    """Trials that differ only in fit.epochs, trained once to the largest count.

    Safe only when nothing makes an early epoch depend on the total: no early stopping (the
    job's or the sweep's pruning) and no learning-rate schedule (the spec has none). Each group
    lists trial indices, the one with the most epochs first: that one trains.
    """
    if not sweep.share_epochs:
        return False, "share_epochs is false", None
    if configs is None:
        return False, "only a grid knows its epoch counts in advance", None
    if "fit.epochs" not in sweep.parameters:
        return False, "fit.epochs is not swept", None
    if sweep.early_stopping is not None:
        return False, "early_stopping (pruning) makes a trial's fate depend on its epochs", None
    if any(s is not None and s.fit.early_stopping is not None for s in specs):
        return False, "fit.early_stopping stops trainings at different epochs", None
    by_rest: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs[:total]):
        rest = tuple(sorted((k, repr(v)) for k, v in cfg.items() if k != "fit.epochs"))
        by_rest.setdefault(rest, []).append(i)
    groups = [sorted(idx, key=lambda i: -configs[i]["fit.epochs"]) for idx in by_rest.values()]
    if all(len(g) == 1 for g in groups):
        return False, "every configuration has one epoch count", None
    return True, "each configuration trains once, to its largest fit.epochs", groups


def pack_key(spec) -> str:
    """What trials must share to train as one model: everything but the model, the optimizer,
    the epochs and the name (the data, its split and order, the batch size, loss, metrics)."""
    d = spec.model_dump(mode="json")
    for k in ("name", "model", "tags"):
        d.pop(k, None)
    d.get("compile", {}).pop("optimizer", None)
    d.get("fit", {}).pop("epochs", None)
    return json.dumps(d, sort_keys=True)


def _packs(sweep: SweepSpec, specs: list, plans: list, total: int,
           groups: list[list[int]] | None, limits: Limits
           ) -> tuple[bool, str, list[list[int]] | None]:
    """Towers (a configuration, or an epoch group trained once) that can share one training,
    in packs capped by the worker's tower count and by the memory estimate. The tower with the
    most epochs leads each pack (its first index trains); the pack trains to its epochs."""
    if not sweep.pack:
        return False, "pack is false", None
    if sweep.method != "grid" or not specs or len(specs) < total:
        return False, "only a grid knows its trials in advance", None
    specs = specs[:total]
    if any(s is None or p is None for s, p in zip(specs, plans[:total])):
        return False, "some configurations are invalid", None
    if any(s.fit.early_stopping is not None for s in specs):
        return False, "fit.early_stopping stops trainings at different epochs", None
    gpu = (sweep.resources.queue if sweep.resources else None) == "gpu"
    cap = limits.pack_max_towers_gpu if gpu else limits.pack_max_towers
    if cap < 2:
        return False, f"the {'GPU' if gpu else 'CPU'} worker packs at most {cap} tower", None
    towers = groups or [[i] for i in range(total)]
    by_key: dict[str, list[list[int]]] = {}
    for tower in towers:
        by_key.setdefault(pack_key(specs[tower[0]]), []).append(tower)
    budget = limits.max_job_memory_mb * MB
    packs: list[list[list[int]]] = []  # pack -> its towers -> trial indices
    memory_capped = False
    for same in by_key.values():
        same = sorted(same, key=lambda t: -specs[t[0]].fit.epochs)
        current: list[list[int]] = []
        used = 0
        for tower in same:
            est = estimate(specs[tower[0]], plans[tower[0]])
            need = est.total if not current else est.total - est.dataset
            if current and (len(current) >= cap or used + need > budget):
                memory_capped |= len(current) < cap
                packs.append(current)
                current, used, need = [], 0, est.total
            current.append(tower)
            used += need
        packs.append(current)
    if max(len(p) for p in packs) < 2:
        why = "no two configurations share the data, its split and order and the batch size"
        if memory_capped:
            why = "the memory estimate leaves room for one tower per training"
        return False, why, None
    why = (f"{len(towers)} towers in {len(packs)} trainings: trials that share the data, its "
           f"split and order and the batch size train as one model (one tower each, at most "
           f"{cap} per {'GPU' if gpu else 'CPU'} worker"
           + (", fewer where the memory estimate says so" if memory_capped else "") + ")")
    if groups:
        why += "; each tower trains once to its largest fit.epochs"
    return True, why, [[i for t in p for i in t] for p in packs]
