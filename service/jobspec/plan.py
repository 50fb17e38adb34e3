"""The lecture's arithmetic: parameter counts, the output layer, the train/validation split."""

from __future__ import annotations

import dataclasses
import math

from service.config import Settings
from service.jobspec.models import ActivationLayer, BatchNormalizationLayer, DenseLayer


def _setting(name: str):
    """The default of the setting ``name`` (:class:`service.config.Settings`)."""
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The deployment's caps a spec is checked against (:func:`service.validation.limits`
    builds them from the settings); by default those of a deployment that sets none."""

    max_params: int = _setting("max_params")
    max_epochs: int = _setting("max_epochs")
    max_samples: int = _setting("max_samples")
    # What one job may add to a training process's memory (see service.jobspec.memory).
    max_job_memory_mb: int = _setting("max_job_memory_mb")
    # Sweep trials packed into one training (service.jobspec.sweep_checks), CPU / GPU queue.
    pack_max_towers: int = _setting("pack_max_towers")
    pack_max_towers_gpu: int = _setting("pack_max_towers_gpu")


DEFAULT_LIMITS = Limits()


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
    memory_mb: float = 0.0  # the estimated peak (service.jobspec.memory)
    # The worker streams the dataset from memory-mapped files instead of holding it
    # (service.jobspec.memory.streams): an uploaded .npz larger than the budget allows.
    streamed: bool = False

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


def effective_batch_size(batch_size: int | None, gradient_descent: str | None,
                         n_train: int) -> int:
    """The batch size training uses: gradient_descent's when it fixes one, else the spec's,
    else Keras's default (32, or the whole set when smaller)."""
    if gradient_descent == "batch":
        return n_train
    if gradient_descent == "stochastic":
        return 1
    if batch_size is not None:
        return batch_size
    if gradient_descent == "mini_batch":
        return min(32, max(2, n_train - 1))
    return min(32, n_train)


def gradient_descent_name(batch_size: int, n_train: int) -> str:
    return "batch" if batch_size >= n_train else "stochastic" if batch_size == 1 else "mini_batch"
