"""The sweep spec: a base job spec, the parameters to vary, and how to search them.

:func:`validate_sweep` checks the sweep at the door the way :func:`service.spec.validate_job`
checks a job: every grid configuration is applied to the base and validated as a job, so a
batch size larger than the training set is refused before any trial runs, with the parameter's
path in the error. It returns a :class:`SweepPlan`, which the scheduler works from.

Nothing here imports Optuna: distributions are described as plain dicts and turned into
Optuna's objects in :mod:`service.sweeps.studies`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from .spec import (
    ACTIVATIONS,
    DEFAULT_LIMITS,
    DatasetInfo,
    ErrorDetail,
    Limits,
    ResourcesSpec,
    SpecError,
    StrictModel,
    humanize_all,
    parse_spec,
    validate_job,
)
from .spec.models import SEED_MAX

METHODS = ("grid", "random", "tpe")
HIDDEN_ACTIVATION = "model.hidden_activation"
MAX_SWEEP_JOBS = 2000  # trials x repeats; a bigger sweep is a typo more often than a plan
Scalar = bool | int | float | str
MAX_VALUES = 1000  # values of one swept parameter
MAX_PARAMETERS = 20
# A grid axis: at least one value (an empty list would make a sweep of no trials).
Values = Annotated[list[Scalar], Field(min_length=1, max_length=MAX_VALUES)]


# Strict like the job spec: "max_trials": "20" or "share_epochs": "false" is an error.
_Strict = StrictModel


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, gt=0)


class Categorical(_Strict):
    type: Literal["categorical"]
    values: list[Scalar] = Field(min_length=1, max_length=MAX_VALUES)


Range = Annotated[FloatRange | IntRange | Categorical, Field(discriminator="type")]


class ObjectiveSpec(_Strict):
    metric: str = "val_loss"
    goal: Literal["minimize", "maximize"] = "minimize"


class MedianStopping(_Strict):
    """Optuna's MedianPruner: stop a trial whose objective at step k is worse than the median
    of the finished trials' at step k."""

    type: Literal["median"]
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: int = Field(default=1, ge=1)


class AshaStopping(_Strict):
    """Optuna's SuccessiveHalvingPruner (asynchronous successive halving)."""

    type: Literal["asha"]
    min_resource: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)


EarlyStopping = Annotated[MedianStopping | AshaStopping, Field(discriminator="type")]


class SweepSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    experiment: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="MLflow experiment; the base's when left out.")
    base: dict[str, Any]
    method: Literal[METHODS] = "grid"  # type: ignore[valid-type]
    parameters: dict[str, Values | Range] = Field(min_length=1, max_length=MAX_PARAMETERS)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    max_trials: int | None = Field(default=None, ge=1)
    max_parallel: int = Field(default=2, ge=1, le=256)
    early_stopping: EarlyStopping | None = None
    repeats: int = Field(default=1, ge=1, le=50,
                         description="Seeds per configuration (fit.seed, fit.seed+1, ...).")
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="The sampler's seed "
                      "(random, tpe).")
    share_epochs: bool = Field(default=True, description="Train once for the epochs axis when "
                               "that gives the same result as separate trainings.")
    resources: ResourcesSpec | None = None


# --- paths into the base spec ------------------------------------------------------------------


def apply_params(base: dict, params: dict[str, Any]) -> dict:
    """A copy of ``base`` with each dotted path set; raises KeyError(path, why) when a path
    does not lead anywhere in the spec."""
    out = copy.deepcopy(base)
    for path, value in params.items():
        if path == HIDDEN_ACTIVATION:
            layers = out.get("model", {}).get("layers") or []
            dense = [la for la in layers if isinstance(la, dict) and la.get("type") == "dense"]
            if len(dense) < 2:
                raise KeyError(path, "the base model needs at least one hidden dense layer")
            for layer in dense[:-1]:
                layer["activation"] = value
            continue
        parts = path.split(".")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise KeyError(path, f"{'.'.join(parts[:i]) or 'the spec'} has "
                                         f"{len(node)} items; {part!r} is not an index of it")
                part = int(part)
                if last:
                    node[part] = value
                else:
                    node = node[part]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise KeyError(path, f"{'.'.join(parts[:i])} is a value, not an object")
    return out


def trial_name(params: dict[str, Any], order: list[str] | None = None) -> str:
    """``bs=5 act=relu ep=50``: what the trial varies, short enough for a run name."""
    return " ".join(f"{short_name(k)}={_fmt(v)}" for k, v in ordered(params, order).items())


def ordered(params: dict[str, Any], order: list[str] | None) -> dict[str, Any]:
    """``params`` in the sweep's parameter order."""
    if not order:
        return dict(params)
    return {k: params[k] for k in order if k in params} | \
        {k: v for k, v in params.items() if k not in order}


SHORT = {"fit.batch_size": "bs", HIDDEN_ACTIVATION: "act", "fit.epochs": "ep",
         "compile.optimizer.learning_rate": "lr", "compile.optimizer.name": "opt",
         "compile.optimizer.momentum": "mom", "fit.validation_split": "val",
         "fit.gradient_descent": "gd", "compile.loss": "loss", "fit.seed": "seed"}


def short_name(path: str) -> str:
    if path in SHORT:
        return SHORT[path]
    parts = path.split(".")
    if len(parts) >= 2 and parts[-2].isdigit():
        return f"{parts[-1]}{parts[-2]}"  # model.layers.0.units -> units0
    return parts[-1]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- the plan ----------------------------------------------------------------------------------


@dataclasses.dataclass
class SweepPlan:
    """What the scheduler needs, stored on the sweep row as JSON."""

    method: str
    param_order: list[str]  # the user's order (PostgreSQL's JSONB does not keep key order)
    total: int  # trials (configurations) the sweep runs
    repeats: int
    distributions: dict[str, dict]  # path -> {"type": ..., ...} (Optuna's, as plain data)
    configs: list[dict] | None  # grid: every configuration, in trial order
    groups: list[list[int]] | None  # grid: trial indices trained once for the epochs axis
    share_epochs: bool
    share_epochs_why: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def distribution_of(space: Any) -> dict:
    if isinstance(space, list):
        return {"type": "categorical", "values": space}
    return space.model_dump(exclude_none=True)


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
                   resolve_upload: Callable[[str], DatasetInfo | None] | None = None
                   ) -> tuple[SweepSpec, SweepPlan]:
    """Field and cross-field checks of a sweep; raises SpecError naming each field."""
    sweep = parse_sweep(data)
    errors: list[ErrorDetail] = []
    try:
        base_spec = parse_spec(sweep.base)
    except SpecError as exc:
        raise SpecError([dataclasses.replace(d, loc=f"base.{d.loc}") for d in exc.details]) \
            from None

    def check(params: dict, loc: str) -> Any:
        """Validate the base with ``params`` applied; errors land on ``loc``."""
        try:
            spec_dict = apply_params(sweep.base, params)
        except KeyError as exc:
            path, why = exc.args
            errors.append(ErrorDetail(f"parameters.{path}", f"{path!r} is not a field of the "
                                      f"job spec: {why}", path))
            return None
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        try:
            return validate_job(spec_dict, limits, resolve_upload)[0]
        except SpecError as exc:
            for d in exc.details:
                where = next((p for p in params if d.loc == p or d.loc.startswith(p + ".")
                              or (p == HIDDEN_ACTIVATION and d.loc.endswith(".activation"))),
                             None)
                if where is None and len(params) == 1:
                    where = next(iter(params))
                prefix = f"parameters.{where}" if where else loc
                msg = d.msg
                if "unknown field" in d.msg:
                    msg = f"{d.loc!r} is not a field of the job spec; check its spelling"
                errors.append(ErrorDetail(prefix, f"with {shown}: {d.loc}: {msg}", d.value))
            return None

    for path in sweep.parameters:
        if path == HIDDEN_ACTIVATION:
            space = sweep.parameters[path]
            values = space if isinstance(space, list) else getattr(space, "values", None)
            if values is None:
                errors.append(ErrorDetail(f"parameters.{path}", "activations are names: give "
                                          "a list or a categorical"))
            else:
                for v in values:
                    if v not in ACTIVATIONS:
                        errors.append(ErrorDetail(f"parameters.{path}", f"{v!r} is not an "
                                                  f"activation; expected one of: "
                                                  f"{', '.join(ACTIVATIONS)}", v))
    if "fit.seed" in sweep.parameters and sweep.repeats > 1:
        errors.append(ErrorDetail("repeats", "repeats sets fit.seed per run, and fit.seed is "
                                  "also swept; use one or the other", sweep.repeats))

    distributions = {path: distribution_of(space) for path, space in sweep.parameters.items()}
    for path, dist in distributions.items():
        if dist["type"] in ("float", "int"):
            if dist["low"] > dist["high"]:
                errors.append(ErrorDetail(f"parameters.{path}", f"low {dist['low']} is above "
                                          f"high {dist['high']}; swap them"))
            if dist.get("log") and dist["low"] <= 0:
                errors.append(ErrorDetail(f"parameters.{path}", f"a log range needs low > 0, "
                                          f"got {dist['low']}", dist["low"]))
            if dist.get("log") and dist.get("step") not in (None, 1):
                errors.append(ErrorDetail(f"parameters.{path}", "log and step cannot be "
                                          "combined; drop one"))
    if errors:
        raise SpecError(_dedupe(errors))

    configs: list[dict] | None = None
    if sweep.method == "grid":
        ranges = [p for p, d in distributions.items() if d["type"] != "categorical"]
        for path in ranges:
            errors.append(ErrorDetail(f"parameters.{path}", "a grid needs explicit values; give "
                                      "a list, or use method 'random' or 'tpe' for a range"))
        if errors:
            raise SpecError(errors)
        paths = list(distributions)
        n = math.prod(len(distributions[p]["values"]) for p in paths)
        if n * sweep.repeats > MAX_SWEEP_JOBS:
            raise SpecError([ErrorDetail("parameters", f"the grid has {n} configurations x "
                                         f"{sweep.repeats} repeats = {n * sweep.repeats} jobs, "
                                         f"above the cap of {MAX_SWEEP_JOBS}; use fewer values "
                                         "or method 'random' with max_trials")])
        # Each value on its own first (short errors that name the value), then every
        # configuration (values that only clash together), reported for the first few.
        for path in paths:
            for v in distributions[path]["values"]:
                check({path: v}, f"parameters.{path}")
        if errors:
            raise SpecError(_dedupe(errors))
        configs = [dict(zip(paths, combo)) for combo in
                   itertools.product(*(distributions[p]["values"] for p in paths))]
        specs = [check(c, "parameters") for c in configs]
        if len(errors) > 5:
            more = len(errors) - 5
            errors[5:] = [ErrorDetail("parameters", f"... and {more} more configurations are "
                                      "invalid in the same way")]
        total = min(n, sweep.max_trials or n)
    else:
        if sweep.max_trials is None:
            errors.append(ErrorDetail("max_trials", f"method {sweep.method!r} samples until "
                                      "max_trials; set it (e.g. 20)"))
        elif sweep.max_trials * sweep.repeats > MAX_SWEEP_JOBS:
            errors.append(ErrorDetail("max_trials", f"{sweep.max_trials} trials x "
                                      f"{sweep.repeats} repeats is above the cap of "
                                      f"{MAX_SWEEP_JOBS} jobs", sweep.max_trials))
        # Every value a sampler could pick is checked at its extremes, one parameter at a time.
        specs = []
        for path, dist in distributions.items():
            values = dist["values"] if dist["type"] == "categorical" else [dist["low"],
                                                                           dist["high"]]
            for v in values:
                specs.append(check({path: v}, f"parameters.{path}"))
        total = sweep.max_trials or 0
    if errors:
        raise SpecError(_dedupe(errors))

    _check_objective(sweep, [s for s in specs if s is not None] or [base_spec], errors)
    if errors:
        raise SpecError(errors)

    share, why, groups = _epoch_groups(sweep, configs, specs, total)
    return sweep, SweepPlan(method=sweep.method, param_order=list(sweep.parameters),
                            total=total, repeats=sweep.repeats, distributions=distributions, configs=configs, groups=groups,
                            share_epochs=share, share_epochs_why=why)


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
