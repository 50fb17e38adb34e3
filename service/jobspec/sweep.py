"""The sweep spec: a base job spec, the parameters to vary, and how to search them.

The models, the paths into the base spec, trial names and the :class:`SweepPlan` the
scheduler works from. The checks at the door are in :mod:`service.jobspec.sweep_checks`.

Nothing here imports Optuna: distributions are described as plain dicts and turned into
Optuna's objects in :mod:`service.sweeps.studies`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Annotated, Any, Literal

from pydantic import Field

from service.jobspec.models import SEED_MAX, JobSpec, ResourcesSpec, StrictModel

METHODS = ("grid", "random", "tpe")
HIDDEN_ACTIVATION = "model.hidden_activation"
MAX_SWEEP_JOBS = 2000  # trials x repeats; a bigger sweep is a typo more often than a plan
Scalar = bool | int | float | str
MAX_VALUES = 1000  # values of one swept parameter
MAX_PARAMETERS = 20
# A parameter's path into the base spec: a field of the job spec, then dot-separated names or
# list indices, none empty (any other path never names a field: validate_sweep answers 422).
# No NUL (body.py).
PARAMETER_PATH_PATTERN = (f"^(?:{'|'.join(JobSpec.model_fields)})"
                          "(?:\\.[^.\\u0000]+)*$")
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


OBJECTIVE_AT = ("last", "best")


class ObjectiveSpec(_Strict):
    metric: str = "val_loss"
    goal: Literal["minimize", "maximize"] = "minimize"
    at: Literal[OBJECTIVE_AT] = Field(  # type: ignore[valid-type]
        default="last", description="Which epoch's value a trial scores: `last` (the model "
        "the trial ends with, the one it logs) or `best` (its best epoch's, as if training had "
        "stopped there). Every trial's run logs `best_epoch` and `best_<metric>` either way.")


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
    parameters: dict[str, Values | Range] = Field(
        min_length=1, max_length=MAX_PARAMETERS,
        json_schema_extra={"propertyNames": {"minLength": 1, "pattern": PARAMETER_PATH_PATTERN}})
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
    pack: bool = Field(default=True, description="Train the trials that share the data, its "
                       "order and the batch size together as one model, one tower per trial.")
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
    return " ".join(f"{short_name(k)}={fmt_value(v)}" for k, v in ordered(params, order).items())


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
    if len(parts) >= 3 and parts[-3].isdigit():
        return f"{parts[-1]}{parts[-3]}"  # model.layers.3.layer.units -> units3
    return parts[-1]


def fmt_value(value: Any) -> str:
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
    # grid: trial indices trained by one training, one tower per configuration (an epoch group
    # is one tower); the first index trains, the others are recorded from its training.
    pack: bool = False
    pack_why: str = "pack is false"
    packs: list[list[int]] | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def distribution_of(space: Any) -> dict:
    if isinstance(space, list):
        return {"type": "categorical", "values": space}
    return space.model_dump(exclude_none=True)


def next_trials(plan: dict, created: set[int]) -> list[int]:
    """The next trial indices to create after ``created``, from a :class:`SweepPlan`'s dict:
    a pack, or a group trained once for the epochs axis, is created as one (its first index
    trains)."""
    total = plan["total"]
    if plan["method"] != "grid":
        n = len(created)
        return [n] if n < total else []
    for i in range(total):
        if i in created:
            continue
        for group in plan.get("packs") or plan["groups"] or []:
            if i in group:
                return [g for g in group if g not in created and g < total]
        return [i]
    return []
