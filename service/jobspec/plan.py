"""The lecture's arithmetic: the plan of a job, its caps, the train/validation split.

Parameters, shapes and the output layer are :mod:`service.jobspec.graph`'s."""

from __future__ import annotations

import dataclasses
import math

from service.config import Settings
from service.jobspec.graph import infer


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

    input_dim: int  # the size of one sample (the product of input_shape)
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
    input_shape: list[int] = dataclasses.field(default_factory=list)  # one sample's shape
    # Each layer: {"name", "type", "output_shape" (per sample), "params"}.
    layers: list[dict] = dataclasses.field(default_factory=list)
    input_dtype: str = "float32"  # "int32" when an embedding reads the input's token ids
    activations: int = 0  # floats one sample keeps for the backward pass (input included)
    # The worker streams the dataset from memory-mapped files instead of holding it
    # (service.jobspec.memory.streams): an uploaded .npz larger than the budget allows.
    streamed: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_params(input_dim: int, layers: list) -> int:
    """Parameters Keras's ``count_params`` reports (trainable and not) for ``layers`` on a
    flat input of ``input_dim`` features (0 when they do not fit it)."""
    graph, _ = infer(layers, (input_dim,))
    return graph.total_params if graph else 0


def output_of(layers: list, input_shape: tuple[int, ...] = (1,)
              ) -> tuple[int | None, int | None, str]:
    """(the layer that sets the output's units, the units, the activation the network ends
    with); (None, None, "linear") when the layers do not fit ``input_shape``."""
    graph, _ = infer(layers, input_shape)
    if graph is None:
        return None, None, "linear"
    return graph.units_index, graph.output_units, graph.output_activation


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
