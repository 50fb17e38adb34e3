"""A job's peak memory, estimated at validation, without TensorFlow.

A spec is data, so a few bytes can ask for a 200,000 x 40,000 synthetic set (32 GB as
float32) that would take the worker's host down, once per retry. The estimate adds up what
one training process holds at its peak, per part, in bytes:

- ``dataset`` (:func:`dataset_bytes`): the generated or loaded table (scikit-learn makes
  float64), its float32 copy and the shuffled train/validation split; on TensorFlow, when that
  split is at most :data:`IN_GRAPH_DATA_MAX` bytes, the worker's own training loop also holds
  it as tensors (TensorFlow's conversion from NumPy peaks at two copies). An uploaded .npz
  (on disk) that would not fit the budget held that way is streamed instead
  (:func:`streams`): then only its index vectors, targets, a few batches and one chunk count;
- ``parameters``: weights, their gradients and the optimizer's slots (Adam keeps two per
  weight, SGD with momentum one, ...);
- ``activations``: each layer's output for one batch (a recurrent layer's gates at every
  timestep too), kept for the backward pass, and its gradient;
- ``validation``: the forward pass over the validation set (the worker validates it in one
  batch) or, without one, the prediction batches behind the confusion matrix.

The framework's own footprint (a few hundred MB, the same for every job) is not included:
the budget (``KERASYARD_MAX_JOB_MEMORY_MB``) is what one job may add on top of it.
"""

from __future__ import annotations

import dataclasses

FLOAT32 = 4
FLOAT64 = 8
# Optimizer slot variables per weight.
SLOTS = {"sgd": 0, "adam": 2, "adamw": 2, "rmsprop": 1, "adagrad": 1}
MB = 1024 * 1024
# The worker's TensorFlow loop (worker/training/backends/tensorflow.py) takes the training and
# validation sets in as tensors when their float32 table is at most this; a larger set trains
# through Model.fit fed batch by batch (at that size the step, not the loop around it, is what
# costs).
IN_GRAPH_DATA_MAX = 64 * MB


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    dataset: int
    parameters: int
    activations: int
    validation: int

    @property
    def total(self) -> int:
        return self.dataset + self.parameters + self.activations + self.validation

    def as_dict(self) -> dict:
        return {"total_mb": round(self.total / MB, 1),
                **{f"{k}_mb": round(v / MB, 1) for k, v in dataclasses.asdict(self).items()}}

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in dataclasses.asdict(self).items())
        return f"about {self.total / MB:,.0f} MB ({parts})"


# A streamed dataset's standardization statistics are summed over chunks of this many bytes
# of float64 (worker/training/streaming.py reads the same constant).
STREAM_CHUNK_BYTES = 1 * MB
# Batches a streamed fit holds at once: the one training, the ones Keras's input pipeline has
# gathered ahead, and each one's float32 copy.
STREAM_BATCHES = 4
INDEX = 8  # an int64 index


def dataset_bytes(plan) -> int:
    """The dataset's part of the estimate, in bytes.

    Held in memory (``plan.streamed`` False): the table as float64, its float32 copy and the
    shuffled split, and two more float32 copies when the TensorFlow loop takes it in as tensors.

    Streamed (an uploaded .npz over the budget, ``plan.streamed``): the permutation and the
    train/validation index vectors and one epoch's order (int64 each), the targets (y and its
    split, 4 bytes a sample each), :data:`STREAM_BATCHES` batches of float32 rows as read from
    the memory map and converted, and one :data:`STREAM_CHUNK_BYTES` chunk of float64 statistics
    with its squares. The memory-mapped file itself is page cache, which the kernel reclaims.
    """
    n, f = plan.n_samples, plan.input_dim
    targets = plan.output_units if plan.task == "regression" else 1
    if getattr(plan, "streamed", False):
        indices = (2 * n + plan.n_train) * INDEX
        ys = 2 * n * targets * FLOAT32
        batches = STREAM_BATCHES * plan.batch_size * (f + targets) * FLOAT32 * 2
        return indices + ys + batches + 2 * STREAM_CHUNK_BYTES
    table = n * (f + targets)
    dataset = table * FLOAT64 + 2 * table * FLOAT32
    if table * FLOAT32 <= IN_GRAPH_DATA_MAX:
        dataset += 2 * table * FLOAT32  # as tensors, in the TensorFlow loop
    return dataset


def streams(spec, plan, info, budget_bytes: int) -> bool:
    """Whether the worker streams this job's dataset: it is on disk (``info.streamable``,
    an uploaded .npz) and the estimate with it held in memory is over ``budget_bytes``.
    Generated and CSV sets are never streamed (they are not on disk as arrays)."""
    return bool(getattr(info, "streamable", False)) and \
        estimate(spec, plan).total > budget_bytes


def estimate(spec, plan) -> MemoryEstimate:
    """``spec`` a validated JobSpec, ``plan`` its TrainingPlan (its ``activations``: the floats
    one sample keeps, from :mod:`service.jobspec.graph`)."""
    opt = spec.compile.optimizer
    slots = SLOTS[opt.name] + (1 if opt.momentum else 0)
    parameters = plan.total_params * FLOAT32 * (2 + slots)
    per_row = plan.activations or plan.input_dim
    # Outputs kept for the backward pass and their gradients (x2), and the batch itself.
    activations = plan.batch_size * per_row * FLOAT32 * 2
    eval_rows = plan.n_val if plan.n_val else min(plan.n_train, max(256, plan.batch_size))
    validation = eval_rows * per_row * FLOAT32
    return MemoryEstimate(dataset_bytes(plan), parameters, activations, validation)
