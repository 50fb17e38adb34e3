"""Dataset shapes: samples, features, task and classes, worked out without generating data."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

from service.jobspec.errors import ErrorDetail, SpecError
from service.jobspec.models import JobSpec, SklearnDataset, SyntheticDataset


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    n_samples: int
    n_features: int
    task: Literal["classification", "regression"]
    n_classes: int | None = None  # None for regression
    # One sample's shape; None: a table row, (n_features,). n_features is its size.
    input_shape: tuple[int, ...] | None = None
    x_dtype: str = "float32"  # "float32", or "int32" for token ids
    x_max: int | None = None  # integer x: its largest value (an embedding's vocabulary)
    # The arrays are on disk (an uploaded .npz): the worker can stream them from a memory map
    # when holding them would exceed the job's memory budget (service.jobspec.memory).
    streamable: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape."""
        return self.input_shape or (self.n_features,)


SKLEARN_SHAPES: dict[str, DatasetInfo] = {
    "iris": DatasetInfo(150, 4, "classification", 3),
    "wine": DatasetInfo(178, 13, "classification", 3),
    "breast_cancer": DatasetInfo(569, 30, "classification", 2),
    "digits": DatasetInfo(1797, 64, "classification", 10),
    "diabetes": DatasetInfo(442, 10, "regression"),
}

PLAYGROUND_SETS = ("circle", "xor", "gauss", "spiral")

UploadResolver = Callable[[str], DatasetInfo | None]


@dataclasses.dataclass(frozen=True)
class UploadedModel:
    """An uploaded ``.keras`` model, as the door checks it: its layers as the spec's
    ``model.layers`` would hold them (:mod:`service.jobspec.layers`), read from its
    ``config.json`` without TensorFlow, and the shape and dtype of one input sample."""

    layers: list
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"


# An uploaded model's id -> the model, or None when there is no such upload.
ModelResolver = Callable[[str], UploadedModel | None]


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


def synthetic_errors(ds: SyntheticDataset) -> list[ErrorDetail]:
    """Options a synthetic set cannot honour (a 3-D spiral, 8 classes from 2 features)."""
    errors: list[ErrorDetail] = []
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
    return errors


def dataset_info_for(spec: JobSpec, resolve_upload: UploadResolver | None,
                     errors: list[ErrorDetail]) -> DatasetInfo | None:
    """The dataset's shape; problems are appended to ``errors`` (None when it is unknown)."""
    ds = spec.dataset
    if isinstance(ds, SklearnDataset):
        if ds.name == "digits" and not ds.standardize:
            # Unscaled, the pixels are the integers 0..16: an embedding can read them as tokens.
            return dataclasses.replace(SKLEARN_SHAPES[ds.name], x_dtype="int32", x_max=16)
        return SKLEARN_SHAPES[ds.name]
    if isinstance(ds, SyntheticDataset):
        errors.extend(synthetic_errors(ds))
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
