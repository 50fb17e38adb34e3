"""The job spec: pydantic v2 models, validated at the door and again in the worker.

Field-level rules live on the strict models (:mod:`.models`); rules that need the dataset's
shape or the configured caps are the small functions of :mod:`.rules`, which
:func:`check_job` runs to return the lecture's quantities as a :class:`TrainingPlan`.

- :mod:`.models`: the models and the names they allow (activations, losses, ...)
- :mod:`.errors`: :class:`SpecError` and pydantic's errors rewritten to name path, value, fix
- :mod:`.shapes`: each dataset's samples, features, task and classes, without generating it
- :mod:`.layers`: every layer type, by Keras's own names and arguments
- :mod:`.graph`: the layers as a graph: wiring, each layer's output shape and parameters
- :mod:`.plan`: :class:`Limits`, :class:`TrainingPlan`, the split
- :mod:`.rules`: the cross-field rules (:data:`RULES`) over a spec's :class:`Facts`
- :mod:`.checks`: :func:`parse_spec`, :func:`check_job` (the rules, then the plan),
  :func:`validate_job`

Nothing here imports TensorFlow or Keras: parameters are counted by arithmetic, and a unit test
holds that arithmetic against Keras's own ``count_params``.
"""

from service.jobspec.checks import check_job, parse_spec, validate_job
from service.jobspec.errors import ErrorDetail, SpecError, _humanize, humanize_all
from service.jobspec.models import (
    ACTIVATIONS,
    CLASSIFICATION_LOSSES,
    GRADIENT_DESCENT,
    LOSSES,
    METRICS,
    OPTIMIZERS,
    REGRESSION_LOSSES,
    SKLEARN_SETS,
    SYNTHETIC_SETS,
    ActivationLayer,
    BatchNormalizationLayer,
    CompileSpec,
    DenseLayer,
    DropoutLayer,
    EarlyStoppingSpec,
    FitSpec,
    JobSpec,
    ModelSpec,
    OptimizerSpec,
    ResourcesSpec,
    SklearnDataset,
    StrictModel,
    SyntheticDataset,
    UploadDataset,
)
from service.jobspec.plan import (
    DEFAULT_LIMITS,
    Limits,
    TrainingPlan,
    count_params,
    output_of,
    split_sizes,
)
from service.jobspec.rules import RULES, Facts
from service.jobspec.shapes import (
    PLAYGROUND_SETS,
    SKLEARN_SHAPES,
    DatasetInfo,
    classification_informative,
    dataset_info_for,
    synthetic_defaults,
    synthetic_info,
)

__all__ = [
    "ACTIVATIONS", "CLASSIFICATION_LOSSES", "DEFAULT_LIMITS", "GRADIENT_DESCENT", "LOSSES",
    "METRICS", "OPTIMIZERS", "PLAYGROUND_SETS", "REGRESSION_LOSSES", "RULES", "SKLEARN_SETS",
    "SKLEARN_SHAPES", "SYNTHETIC_SETS", "ActivationLayer", "BatchNormalizationLayer",
    "CompileSpec", "DatasetInfo", "DenseLayer", "DropoutLayer", "EarlyStoppingSpec",
    "ErrorDetail", "Facts", "FitSpec", "JobSpec", "Limits", "ModelSpec", "OptimizerSpec",
    "ResourcesSpec", "SklearnDataset", "SpecError", "StrictModel", "SyntheticDataset",
    "TrainingPlan", "UploadDataset", "_humanize", "check_job", "classification_informative",
    "count_params", "dataset_info_for", "humanize_all", "output_of", "parse_spec",
    "split_sizes", "synthetic_defaults", "synthetic_info", "validate_job",
]
