"""The job spec's pydantic models and the names they allow.

Every model is strict: a JSON boolean or a string is not a number (``"epochs": true``,
``"units": "64"``), a string is not a boolean (``"use_bias": "true"``), and a misspelt key is an
error. An integer is still a float (``"learning_rate": 1``): pydantic's strict mode allows that
one widening, as JSON has a single number type.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from service.jobspec.base import ACTIVATIONS, Activation, StrictModel  # noqa: F401 (re-exported)
from service.jobspec.layers import (  # noqa: F401 (re-exported)
    ActivationLayer,
    BatchNormalizationLayer,
    DenseLayer,
    DropoutLayer,
    Layer,
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

Loss = Literal[LOSSES]  # type: ignore[valid-type]
Metric = Literal[METRICS]  # type: ignore[valid-type]


# numpy's and Keras's seeds are unsigned 32-bit.
SEED_MAX = 2**32 - 1
MAX_LAYERS = 64
MAX_RANK = 4  # dimensions of one sample (an image is 3: height, width, channels)
MAX_TAGS = 50
# MLflow's rules for tag keys (kerasyard logs them as "user.<key>"): word characters,
# dashes, dots, spaces and slashes, as a relative path with no "." or ".." parts.
TAG_KEY = re.compile(r"^[\w\-. /]+$")
# The same rule (with _mlflow_tag_keys's checks of the parts) as one pattern, for the OpenAPI
# document; a unit test holds the two equal. Parts joined by '/', none empty, '.' or '..';
# like TAG_KEY's '$', one final newline may follow (it then belongs to the last part).
_TAG_PART = r"(?!\.\.?(?:/|(?![\s\S])))[\w\-. ]+"
TAG_KEY_PATTERN = (rf"^(?:(?:{_TAG_PART}/)*{_TAG_PART}"
                   rf"|(?:(?:{_TAG_PART}/)*[\w\-. ]+|(?:{_TAG_PART}/)+)\n)(?![\s\S])")
MAX_TAG_KEY = 200
MAX_TAG_VALUE = 5000


# --- model -----------------------------------------------------------------------------------


class ModelSpec(StrictModel):
    """The network: its ``layers`` (:mod:`.layers`), or an ``uploaded`` ``.keras`` model."""

    input_dim: int | None = Field(default=None, gt=0,
                                  description="Optional; must equal the dataset's feature count.")
    input_shape: list[Annotated[int, Field(gt=0)]] | None = Field(
        default=None, min_length=1, max_length=MAX_RANK,
        description="Optional; must equal the shape of one of the dataset's samples.")
    layers: list[Layer] | None = Field(default=None, min_length=1, max_length=MAX_LAYERS)
    uploaded: str | None = Field(default=None, min_length=1, max_length=64, description=(
        "The id of a model uploaded to POST /api/v1/models, instead of layers."))

    @model_validator(mode="after")
    def _layers_or_uploaded(self) -> ModelSpec:
        if (self.layers is None) == (self.uploaded is None):
            raise ValueError("give the model's layers or the id of an uploaded model "
                             "(uploaded), one of the two")
        return self


# --- compile ---------------------------------------------------------------------------------


class OptimizerSpec(StrictModel):
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


class CompileSpec(StrictModel):
    loss: Loss
    optimizer: OptimizerSpec
    metrics: list[Metric] = Field(default_factory=list, max_length=len(METRICS))

    @model_validator(mode="before")
    @classmethod
    def _optimizer_shorthand(cls, data: Any) -> Any:
        # "optimizer": "adam" is accepted as {"name": "adam"}.
        if isinstance(data, dict) and isinstance(data.get("optimizer"), str):
            data = {**data, "optimizer": {"name": data["optimizer"]}}
        return data


# --- fit -------------------------------------------------------------------------------------


class EarlyStoppingSpec(StrictModel):
    monitor: str = "val_loss"
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best_weights: bool = False


class FitSpec(StrictModel):
    batch_size: int | None = Field(default=None, gt=0)
    epochs: int = Field(gt=0)
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    shuffle: bool = True
    gradient_descent: Literal[GRADIENT_DESCENT] | None = None  # type: ignore[valid-type]
    early_stopping: EarlyStoppingSpec | None = None
    # >= 1 is checked by spec/checks.py (steps_per_execution_positive, with its message);
    # the JSON Schema says it too, so the OpenAPI document declares what the API accepts.
    steps_per_execution: int | Literal["auto"] = Field(
        default="auto", json_schema_extra=lambda schema: schema["anyOf"][0].update(minimum=1))


# --- dataset ---------------------------------------------------------------------------------


class SyntheticDataset(StrictModel):
    kind: Literal["synthetic"]
    name: Literal[SYNTHETIC_SETS]  # type: ignore[valid-type]
    n_samples: int = Field(default=200, ge=2)
    n_features: int | None = Field(default=None, gt=0)
    n_classes: int | None = Field(default=None, ge=2)
    noise: float = Field(default=0.1, ge=0.0, le=1e6)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)


class SklearnDataset(StrictModel):
    kind: Literal["sklearn"]
    name: Literal[SKLEARN_SETS]  # type: ignore[valid-type]
    standardize: bool = True


class UploadDataset(StrictModel):
    kind: Literal["upload"]
    id: str = Field(min_length=1)
    target: str = Field(default="target", description=(
        "A CSV's target column. An .npz upload trains on its arrays x and y: leave target "
        "out, or write \"y\"."))
    task: Literal["classification", "regression"] | None = Field(default=None, description=(
        "Default: inferred (a CSV's integer target with at most 50 values, or an .npz's "
        "integer y, is classification; otherwise regression)."))
    standardize: bool = Field(default=True, description=(
        "Scale each feature to mean 0 and standard deviation 1 on the training split. An "
        ".npz with integer x is token ids and is never scaled; float x is."))


Dataset = Annotated[SyntheticDataset | SklearnDataset | UploadDataset,
                    Field(discriminator="kind")]


class ResourcesSpec(StrictModel):
    queue: Literal["cpu", "gpu"] | None = None


class JobSpec(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    experiment: str = Field(default="Default", min_length=1, max_length=200)
    dataset: Dataset
    model: ModelSpec
    compile: CompileSpec
    fit: FitSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS, json_schema_extra={
        "propertyNames": {"minLength": 1, "maxLength": MAX_TAG_KEY, "pattern": TAG_KEY_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": MAX_TAG_VALUE}})

    @field_validator("tags")
    @classmethod
    def _mlflow_tag_keys(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            shown = key if len(key) <= 40 else key[:40] + "…"
            parts = key.split("/")
            if len(key) > MAX_TAG_KEY or not TAG_KEY.match(key) or key.startswith("/") or \
                    any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"tag key {shown!r} is not one MLflow accepts: use at most 200 "
                                 "letters, digits, '_', '-', '.', ' ' and '/' (no leading '/', "
                                 "no empty, '.' or '..' parts)")
            if len(value) > MAX_TAG_VALUE:
                raise ValueError(f"the value of tag {shown!r} is {len(value)} characters; MLflow "
                                 f"takes at most {MAX_TAG_VALUE}")
        return tags
