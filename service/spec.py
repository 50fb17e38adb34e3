"""The job spec: one pydantic v2 model, validated at the door and again in the worker.

Field-level rules live on the models; rules that need the dataset's shape or the configured
caps live in :func:`check_job`, which returns the lecture's quantities as a :class:`TrainingPlan`
(input_dim, n_train, steps_per_epoch, total_updates, total_params, gradient_descent).

Nothing here imports TensorFlow or Keras: parameters are counted by arithmetic, and a unit test
holds that arithmetic against Keras's own ``count_params``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ACTIVATIONS = (
    "relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "gelu", "silu", "swish",
    "leaky_relu", "softplus", "softsign", "hard_sigmoid", "exponential", "relu6", "mish",
)
LOSSES = (
    "binary_crossentropy", "sparse_categorical_crossentropy", "categorical_crossentropy",
    "mse", "mae", "huber",
)
CLASSIFICATION_LOSSES = ("binary_crossentropy", "sparse_categorical_crossentropy",
                         "categorical_crossentropy")
REGRESSION_LOSSES = ("mse", "mae", "huber")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
METRICS = ("accuracy", "mae", "mse", "auc", "precision", "recall")
SYNTHETIC_SETS = ("classification", "regression", "circle", "xor", "gauss", "spiral", "linear")
SKLEARN_SETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
GRADIENT_DESCENT = ("batch", "stochastic", "mini_batch")

Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]
Loss = Literal[LOSSES]  # type: ignore[valid-type]
Metric = Literal[METRICS]  # type: ignore[valid-type]


class _Strict(BaseModel):
    # A misspelt key ("epoch" for "epochs") is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


# --- model -----------------------------------------------------------------------------------


class DenseLayer(_Strict):
    type: Literal["dense"]
    units: int = Field(gt=0, description="Number of neurons.")
    activation: Activation = "linear"
    use_bias: bool = True


class DropoutLayer(_Strict):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0, description="Fraction of inputs dropped in training.")


class BatchNormalizationLayer(_Strict):
    type: Literal["batch_normalization"]


class ActivationLayer(_Strict):
    type: Literal["activation"]
    activation: Activation


Layer = Annotated[
    DenseLayer | DropoutLayer | BatchNormalizationLayer | ActivationLayer,
    Field(discriminator="type"),
]


class ModelSpec(_Strict):
    input_dim: int | None = Field(default=None, gt=0,
                                  description="Optional; must equal the dataset's feature count.")
    layers: list[Layer] = Field(min_length=1)


# --- compile ---------------------------------------------------------------------------------


class OptimizerSpec(_Strict):
    name: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    learning_rate: float = Field(default=0.01, gt=0.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0,
                            description="sgd and rmsprop only.")
    nesterov: bool = Field(default=False, description="sgd only.")
    weight_decay: float | None = Field(default=None, ge=0.0, description="adamw (default 0.004).")

    @model_validator(mode="after")
    def _options_belong_to_optimizer(self) -> OptimizerSpec:
        if self.momentum and self.name not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum={self.momentum} applies to sgd and rmsprop, "
                             f"not {self.name!r}; remove it or switch optimizer")
        if self.nesterov and self.name != "sgd":
            raise ValueError(f"nesterov applies to sgd only, not {self.name!r}; remove it")
        if self.weight_decay is not None and self.name != "adamw":
            raise ValueError(f"weight_decay applies to adamw only, not {self.name!r}; "
                             "remove it or use adamw")
        return self


class CompileSpec(_Strict):
    loss: Loss
    optimizer: OptimizerSpec
    metrics: list[Metric] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _optimizer_shorthand(cls, data: Any) -> Any:
        # "optimizer": "adam" is accepted as {"name": "adam"}.
        if isinstance(data, dict) and isinstance(data.get("optimizer"), str):
            data = {**data, "optimizer": {"name": data["optimizer"]}}
        return data


# --- fit -------------------------------------------------------------------------------------


class EarlyStoppingSpec(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best_weights: bool = False


class FitSpec(_Strict):
    batch_size: int | None = Field(default=None, gt=0)
    epochs: int = Field(gt=0)
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0
    shuffle: bool = True
    gradient_descent: Literal[GRADIENT_DESCENT] | None = None  # type: ignore[valid-type]
    early_stopping: EarlyStoppingSpec | None = None
    steps_per_execution: int | Literal["auto"] = "auto"


# --- dataset ---------------------------------------------------------------------------------


class SyntheticDataset(_Strict):
    kind: Literal["synthetic"]
    name: Literal[SYNTHETIC_SETS]  # type: ignore[valid-type]
    n_samples: int = Field(default=200, ge=2)
    n_features: int | None = Field(default=None, gt=0)
    n_classes: int | None = Field(default=None, ge=2)
    noise: float = Field(default=0.1, ge=0.0)
    seed: int = 0


class SklearnDataset(_Strict):
    kind: Literal["sklearn"]
    name: Literal[SKLEARN_SETS]  # type: ignore[valid-type]
    standardize: bool = True


class UploadDataset(_Strict):
    kind: Literal["upload"]
    id: str = Field(min_length=1)
    target: str = "target"
    task: Literal["classification", "regression"] | None = None
    standardize: bool = True


Dataset = Annotated[SyntheticDataset | SklearnDataset | UploadDataset,
                    Field(discriminator="kind")]


class ResourcesSpec(_Strict):
    queue: Literal["cpu", "gpu"] | None = None


class JobSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    experiment: str = Field(default="Default", min_length=1, max_length=200)
    dataset: Dataset
    model: ModelSpec
    compile: CompileSpec
    fit: FitSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tags: dict[str, str] = Field(default_factory=dict)


# --- dataset shapes (no data is generated here) ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    n_samples: int
    n_features: int
    task: Literal["classification", "regression"]
    n_classes: int | None = None  # None for regression


SKLEARN_SHAPES: dict[str, DatasetInfo] = {
    "iris": DatasetInfo(150, 4, "classification", 3),
    "wine": DatasetInfo(178, 13, "classification", 3),
    "breast_cancer": DatasetInfo(569, 30, "classification", 2),
    "digits": DatasetInfo(1797, 64, "classification", 10),
    "diabetes": DatasetInfo(442, 10, "regression"),
}

PLAYGROUND_SETS = ("circle", "xor", "gauss", "spiral")


def synthetic_defaults(ds: SyntheticDataset) -> tuple[int, int | None]:
    """(n_features, n_classes) after defaults; n_classes is None for regression sets."""
    if ds.name in PLAYGROUND_SETS:
        return 2, 2
    if ds.name == "classification":
        return ds.n_features or 20, ds.n_classes or 2
    if ds.name == "linear":
        return ds.n_features or 1, None
    return ds.n_features or 10, None  # regression


def classification_informative(n_features: int, n_classes: int) -> int:
    """Informative features for make_classification: enough for n_classes clusters."""
    return min(n_features, max(2, n_classes))


def synthetic_info(ds: SyntheticDataset) -> DatasetInfo:
    n_features, n_classes = synthetic_defaults(ds)
    task = "classification" if n_classes else "regression"
    return DatasetInfo(ds.n_samples, n_features, task, n_classes)


# --- errors ----------------------------------------------------------------------------------


@dataclasses.dataclass
class ErrorDetail:
    loc: str
    msg: str
    value: Any = None

    def as_dict(self) -> dict:
        out = {"loc": self.loc, "msg": self.msg}
        if self.value is not None:
            out["value"] = self.value
        return out


class SpecError(Exception):
    """An invalid spec; ``details`` name each offending field."""

    def __init__(self, details: list[ErrorDetail]):
        self.details = details
        first = details[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        super().__init__(f"{first.loc}: {first.msg}{more}")


_UNION_TAGS = {"dense", "dropout", "batch_normalization", "activation", "synthetic", "sklearn",
               "upload"}


def _loc(parts: tuple) -> str:
    # Drop pydantic's union-tag segment ("model.layers.0.dense.units") so the path reads like
    # the JSON the user wrote ("model.layers.0.units").
    out: list = []
    for i, p in enumerate(parts):
        prev = parts[i - 1] if i else None
        if p in _UNION_TAGS and (isinstance(prev, int) or prev == "dataset"):
            continue
        out.append(p)
    return ".".join(str(p) for p in out) or "(body)"


def _suggest(value: Any, choices: tuple[str, ...]) -> str:
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]!r}?"
    return ""


def _literal_choices(err: dict) -> tuple[str, ...]:
    expected = (err.get("ctx") or {}).get("expected", "")
    return tuple(part.strip().strip("'") for part in expected.replace(" or ", ",").split(",")
                 if part.strip())


def _humanize(err: dict) -> ErrorDetail:
    loc = _loc(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return ErrorDetail(loc, "field required; add it to the spec")
    if kind == "extra_forbidden":
        return ErrorDetail(loc, "unknown field; remove it or check its spelling", value)
    if kind == "literal_error":
        choices = _literal_choices(err)
        return ErrorDetail(loc, f"{value!r} is not allowed; expected one of: "
                                f"{', '.join(choices)}{_suggest(value, choices)}", value)
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        expected = (err.get("ctx") or {}).get("expected_tags")
        return ErrorDetail(loc, f"{tag!r} is not a known type; expected one of: {expected}", tag)
    if kind == "union_tag_not_found":
        return ErrorDetail(loc, f"the discriminator field is missing: "
                                f"{(err.get('ctx') or {}).get('discriminator')}")
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg = f"{value!r} is out of range: {msg[0].lower()}{msg[1:]}"
    return ErrorDetail(loc, msg, value if not isinstance(value, (dict, list)) else None)


def parse_spec(data: Any) -> JobSpec:
    """Field-level validation; raises SpecError with one detail per offending field."""
    if not isinstance(data, dict):
        raise SpecError([ErrorDetail("(body)", f"a job spec must be a JSON object, got "
                                               f"{type(data).__name__}")])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_humanize(e) for e in exc.errors()]) from None


# --- cross-field checks and the lecture's quantities ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Limits:
    max_params: int = 5_000_000
    max_epochs: int = 10_000
    max_samples: int = 200_000


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """What the lecture asks a student to work out, for one job."""

    input_dim: int
    n_samples: int
    n_train: int
    n_val: int
    task: str
    n_classes: int | None
    batch_size: int
    epochs: int
    steps_per_epoch: int
    total_updates: int
    total_params: int
    gradient_descent: str
    output_units: int
    output_activation: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_params(input_dim: int, layers: list) -> int:
    """Parameters Keras's ``count_params`` reports (trainable and not) for this stack."""
    total, width = 0, input_dim
    for layer in layers:
        if isinstance(layer, DenseLayer):
            total += width * layer.units + (layer.units if layer.use_bias else 0)
            width = layer.units
        elif isinstance(layer, BatchNormalizationLayer):
            total += 4 * width  # gamma, beta (trained) + moving mean, variance (not)
    return total


def output_of(layers: list) -> tuple[int | None, int | None, str]:
    """(index of the last dense layer, its units, the activation the network ends with)."""
    idx, units, act = None, None, "linear"
    for i, layer in enumerate(layers):
        if isinstance(layer, DenseLayer):
            idx, units, act = i, layer.units, layer.activation
        elif isinstance(layer, ActivationLayer) and idx is not None:
            act = layer.activation
    return idx, units, act


def split_sizes(n_samples: int, validation_split: float) -> tuple[int, int]:
    n_val = math.floor(n_samples * validation_split)
    return n_samples - n_val, n_val


def dataset_info_for(spec: JobSpec, resolve_upload: Callable[[str], DatasetInfo | None] | None,
                     errors: list[ErrorDetail]) -> DatasetInfo | None:
    ds = spec.dataset
    if isinstance(ds, SklearnDataset):
        return SKLEARN_SHAPES[ds.name]
    if isinstance(ds, SyntheticDataset):
        n_features, n_classes = synthetic_defaults(ds)
        if ds.name in PLAYGROUND_SETS and (ds.n_features not in (None, 2)):
            errors.append(ErrorDetail("dataset.n_features", f"the {ds.name!r} set is 2-D; "
                                      "n_features must be 2 or left out", ds.n_features))
        if ds.name in PLAYGROUND_SETS and ds.n_classes not in (None, 2):
            errors.append(ErrorDetail("dataset.n_classes", f"the {ds.name!r} set has 2 classes;"
                                      " n_classes must be 2 or left out", ds.n_classes))
        if ds.name in ("regression", "linear") and ds.n_classes is not None:
            errors.append(ErrorDetail("dataset.n_classes", f"{ds.name!r} is a regression set; "
                                      "remove n_classes", ds.n_classes))
        if ds.name == "classification" and n_classes and n_features:
            if n_classes > 2 ** classification_informative(n_features, n_classes):
                need = max(2, math.ceil(math.log2(n_classes)))
                errors.append(ErrorDetail("dataset.n_features", f"{n_features} features cannot "
                                          f"separate {n_classes} classes; use n_features >= "
                                          f"{need}", n_features))
            if n_features < 2:
                errors.append(ErrorDetail("dataset.n_features", "synthetic classification needs "
                                          "at least 2 features", n_features))
        return synthetic_info(ds)
    if resolve_upload is None:
        errors.append(ErrorDetail("dataset.id", "uploaded datasets cannot be resolved here", ds.id))
        return None
    try:
        info = resolve_upload(ds.id)
    except SpecError as exc:
        errors.extend(exc.details)
        return None
    if info is None:
        errors.append(ErrorDetail("dataset.id", f"no uploaded dataset with id {ds.id!r}; upload "
                                  "a CSV to POST /api/v1/datasets and use the id it returns",
                                  ds.id))
    return info


def check_job(spec: JobSpec, limits: Limits = Limits(),
              resolve_upload: Callable[[str], DatasetInfo | None] | None = None) -> TrainingPlan:
    """Cross-field checks; returns the plan or raises SpecError naming each field."""
    errors: list[ErrorDetail] = []
    info = dataset_info_for(spec, resolve_upload, errors)
    if info is None:
        raise SpecError(errors)
    if info.n_samples > limits.max_samples:
        errors.append(ErrorDetail("dataset.n_samples", f"{info.n_samples} samples is above the "
                                  f"cap of {limits.max_samples}", info.n_samples))

    layers = spec.model.layers
    input_dim = info.n_features
    if spec.model.input_dim is not None and spec.model.input_dim != input_dim:
        errors.append(ErrorDetail("model.input_dim", f"{spec.model.input_dim} does not match the "
                                  f"dataset's {input_dim} features; set it to {input_dim} or "
                                  "leave it out", spec.model.input_dim))

    out_idx, out_units, out_act = output_of(layers)
    loss = spec.compile.loss
    if out_idx is None:
        errors.append(ErrorDetail("model.layers", "the model needs at least one dense layer"))
    else:
        units_loc = f"model.layers.{out_idx}.units"
        act_loc = f"model.layers.{out_idx}.activation"
        if info.task == "regression":
            if loss in CLASSIFICATION_LOSSES:
                errors.append(ErrorDetail("compile.loss", f"{loss!r} is a classification loss "
                                          "but the dataset is regression; use 'mse', 'mae' or "
                                          "'huber'", loss))
            if out_units != 1:
                errors.append(ErrorDetail(units_loc, f"a regression output has 1 unit, got "
                                          f"{out_units}; set units to 1", out_units))
            if out_act in ("softmax", "sigmoid"):
                errors.append(ErrorDetail(act_loc, f"{out_act!r} squashes a regression output; "
                                          "use 'linear'", out_act))
        else:
            n_classes = info.n_classes or 2
            if loss in REGRESSION_LOSSES:
                errors.append(ErrorDetail("compile.loss", f"{loss!r} is a regression loss but the "
                                          f"dataset has {n_classes} classes; use "
                                          "'sparse_categorical_crossentropy'"
                                          + (" or 'binary_crossentropy'" if n_classes == 2 else ""),
                                          loss))
            elif loss == "binary_crossentropy":
                if n_classes != 2:
                    errors.append(ErrorDetail("compile.loss", f"binary_crossentropy needs 2 "
                                              f"classes, the dataset has {n_classes}; use "
                                              "'sparse_categorical_crossentropy'", loss))
                if out_units != 1 or out_act not in ("sigmoid", "linear"):
                    errors.append(ErrorDetail(units_loc if out_units != 1 else act_loc,
                                              "binary_crossentropy needs a 1-unit sigmoid output, "
                                              f"got {out_units} unit(s) with {out_act!r}; set "
                                              "units 1 and activation 'sigmoid'",
                                              out_units if out_units != 1 else out_act))
            else:
                if out_units != n_classes:
                    errors.append(ErrorDetail(units_loc, f"the output layer has {out_units} units "
                                              f"but the dataset has {n_classes} classes; set "
                                              f"units to {n_classes}", out_units))
                if out_act not in ("softmax", "linear"):
                    errors.append(ErrorDetail(act_loc, f"{loss} needs a 'softmax' output (or "
                                              f"'linear' for logits), got {out_act!r}", out_act))
    if out_act == "softmax" and out_units == 1:
        errors.append(ErrorDetail(f"model.layers.{out_idx}.activation", "softmax over 1 unit is "
                                  "always 1.0; use 'sigmoid' for a single output", out_act))

    binary = loss == "binary_crossentropy"
    for i, metric in enumerate(spec.compile.metrics):
        if metric == "accuracy" and info.task == "regression":
            errors.append(ErrorDetail(f"compile.metrics.{i}", "accuracy needs a classification "
                                      "dataset; use 'mae' or 'mse'", metric))
        if metric in ("auc", "precision", "recall") and not binary:
            errors.append(ErrorDetail(f"compile.metrics.{i}", f"{metric!r} works on binary "
                                      "classification (binary_crossentropy, 1 sigmoid unit)",
                                      metric))
        if metric in ("mae", "mse") and info.task == "classification" and not binary:
            errors.append(ErrorDetail(f"compile.metrics.{i}", f"{metric!r} on class labels with a "
                                      f"{out_units}-way output is meaningless; use 'accuracy'",
                                      metric))

    fit = spec.fit
    n_train, n_val = split_sizes(info.n_samples, fit.validation_split)
    if n_train < 1:
        errors.append(ErrorDetail("fit.validation_split", f"{fit.validation_split} leaves no "
                                  "training samples", fit.validation_split))
        n_train = 1
    if fit.validation_split > 0 and n_val == 0:
        errors.append(ErrorDetail("fit.validation_split", f"{fit.validation_split} of "
                                  f"{info.n_samples} samples is 0 validation samples; raise it",
                                  fit.validation_split))
    batch_size = fit.batch_size
    gd = fit.gradient_descent
    if gd == "batch":
        if batch_size is not None and batch_size != n_train:
            errors.append(ErrorDetail("fit.batch_size", f"gradient_descent 'batch' uses all "
                                      f"{n_train} training samples per update, but batch_size is "
                                      f"{batch_size}; remove batch_size or set it to {n_train}",
                                      batch_size))
        batch_size = n_train
    elif gd == "stochastic":
        if batch_size is not None and batch_size != 1:
            errors.append(ErrorDetail("fit.batch_size", f"gradient_descent 'stochastic' uses 1 "
                                      f"sample per update, but batch_size is {batch_size}; remove "
                                      "batch_size or set it to 1", batch_size))
        batch_size = 1
    elif gd == "mini_batch":
        if batch_size is None:
            batch_size = min(32, max(2, n_train - 1))
        if not 1 < batch_size < n_train:
            errors.append(ErrorDetail("fit.batch_size", f"gradient_descent 'mini_batch' needs "
                                      f"1 < batch_size < {n_train} (training samples), got "
                                      f"{batch_size}", batch_size))
    elif batch_size is None:
        batch_size = min(32, n_train)  # Keras's default
    if batch_size > n_train and gd is None:
        errors.append(ErrorDetail("fit.batch_size", f"{batch_size} is larger than the "
                                  f"{n_train} training samples; use at most {n_train}",
                                  batch_size))
    if fit.epochs > limits.max_epochs:
        errors.append(ErrorDetail("fit.epochs", f"{fit.epochs} is above the cap of "
                                  f"{limits.max_epochs} epochs", fit.epochs))
    if isinstance(fit.steps_per_execution, int) and fit.steps_per_execution < 1:
        errors.append(ErrorDetail("fit.steps_per_execution", "must be >= 1 or 'auto'",
                                  fit.steps_per_execution))
    if fit.early_stopping is not None:
        monitor = fit.early_stopping.monitor
        base = monitor.removeprefix("val_")
        known = {"loss", *spec.compile.metrics}
        if base not in known:
            errors.append(ErrorDetail("fit.early_stopping.monitor", f"{monitor!r} is not logged; "
                                      f"use one of: {', '.join(sorted(known))} (or val_ twins)",
                                      monitor))
        elif monitor.startswith("val_") and n_val == 0:
            errors.append(ErrorDetail("fit.early_stopping.monitor", f"{monitor!r} needs "
                                      "validation data; set fit.validation_split > 0 or monitor "
                                      f"{base!r}", monitor))

    total_params = count_params(input_dim, layers)
    if total_params > limits.max_params:
        errors.append(ErrorDetail("model.layers", f"the model has {total_params:,} parameters, "
                                  f"above the cap of {limits.max_params:,}; use fewer units",
                                  total_params))
    if errors:
        raise SpecError(errors)

    steps = math.ceil(n_train / batch_size)
    gd_name = "batch" if batch_size >= n_train else "stochastic" if batch_size == 1 else "mini_batch"
    return TrainingPlan(
        input_dim=input_dim, n_samples=info.n_samples, n_train=n_train, n_val=n_val,
        task=info.task, n_classes=info.n_classes, batch_size=batch_size, epochs=fit.epochs,
        steps_per_epoch=steps, total_updates=steps * fit.epochs, total_params=total_params,
        gradient_descent=gd_name, output_units=out_units or 0, output_activation=out_act,
    )


def validate_job(data: Any, limits: Limits = Limits(),
                 resolve_upload: Callable[[str], DatasetInfo | None] | None = None
                 ) -> tuple[JobSpec, TrainingPlan]:
    spec = parse_spec(data)
    return spec, check_job(spec, limits, resolve_upload)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for MLflow params: {"fit": {"epochs": 3}} -> {"fit.epochs": 3}."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = data
    return out
