"""The cross-field rules of a job spec, one small function per rule, in :data:`RULES`.

Each rule reads a :class:`Facts` (the spec, the dataset's shape and what follows from them,
worked out once) and yields an :class:`~service.jobspec.errors.ErrorDetail` per offending
field; :func:`reads` declares the fields it looks at. :mod:`.checks` runs them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

from service.jobspec.errors import ErrorDetail
from service.jobspec.graph import GraphInfo, activations_per_sample
from service.jobspec.graph.model import graph_of
from service.jobspec.graph.shapes import show
from service.jobspec.memory import MB, estimate, streams
from service.jobspec.models import CLASSIFICATION_LOSSES, REGRESSION_LOSSES, JobSpec
from service.jobspec.plan import (
    Limits,
    TrainingPlan,
    effective_batch_size,
    gradient_descent_name,
    split_sizes,
)
from service.jobspec.shapes import DatasetInfo, ModelResolver

# Where a layer keeps the field that sets the output's units, and its activation.
_UNITS_FIELD = {"conv1d": "filters", "conv2d": "filters", "bidirectional": "layer.units"}
_ACT_FIELD = {"bidirectional": "layer.activation"}


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the rules look at: the spec, the dataset's shape, and what follows from them."""

    spec: JobSpec
    info: DatasetInfo
    limits: Limits
    graph: GraphInfo | None  # the model's layers worked out; None when they do not fit
    model_errors: tuple[ErrorDetail, ...]  # why the graph is None (or the upload is wrong)
    n_train: int  # at least 1, so that the rules after an empty training set still run
    n_val: int
    batch_size: int

    @property
    def out_idx(self) -> int | None:
        """The layer whose units the output has (None: no layer sets them)."""
        return self.graph.units_index if self.graph else None

    @property
    def out_units(self) -> int | None:
        return self.graph.output_units if self.graph else None

    @property
    def out_act(self) -> str:
        return self.graph.output_activation if self.graph else "linear"

    @property
    def total_params(self) -> int:
        return self.graph.total_params if self.graph else 0

    @property
    def loss(self) -> str:
        return self.spec.compile.loss

    @property
    def n_classes(self) -> int:
        return self.info.n_classes or 2

    def _loc(self, idx: int | None, fields: dict, default: str) -> str:
        if self.spec.model.uploaded is not None:
            return "model.uploaded"
        if idx is None:
            return f"model.layers.{self.graph.output_index}" if self.graph else "model.layers"
        return f"model.layers.{idx}.{fields.get(self.graph.layers[idx].type, default)}"

    @property
    def units_loc(self) -> str:
        return self._loc(self.out_idx, _UNITS_FIELD, "units")

    @property
    def act_loc(self) -> str:
        return self._loc(self.graph.activation_index if self.graph else None, _ACT_FIELD,
                         "activation")

    @property
    def has_output(self) -> bool:
        """The model works out and ends in one vector per sample."""
        return self.graph is not None and len(self.graph.output_shape) == 1

    @property
    def classifies(self) -> bool:
        return self.info.task == "classification"


def facts_of(spec: JobSpec, info: DatasetInfo, limits: Limits,
             resolve_model: ModelResolver | None = None) -> Facts:
    graph, errors = graph_of(spec, info, resolve_model)
    n_train, n_val = split_sizes(info.n_samples, spec.fit.validation_split)
    n_train = max(n_train, 1)
    return Facts(spec=spec, info=info, limits=limits, graph=graph, model_errors=tuple(errors),
                 n_train=n_train, n_val=n_val,
                 batch_size=effective_batch_size(spec.fit.batch_size,
                                                 spec.fit.gradient_descent, n_train))


Rule = Callable[[Facts], Iterator[ErrorDetail]]

# What a rule reads besides the fields it names: the network's end (which layers are dense,
# and the units and activation from the last dense layer on). See :func:`_read_paths`.
OUTPUT = "<output>"


def reads(*paths: str) -> Callable[[Rule], Rule]:
    """Declares the spec fields a rule reads (``fit``, ``fit.batch_size``, ``dataset``, or
    :data:`OUTPUT`): when field validation replaced one of them, the rule is not run on the
    stand-in (:func:`rule_errors`), so it never reports an error the user's values do not
    cause."""

    def mark(rule: Rule) -> Rule:
        rule.reads = paths  # type: ignore[attr-defined]
        return rule

    return mark


# --- the dataset and the model's ends -------------------------------------------------------


@reads("dataset")
def sample_cap(f: Facts) -> Iterator[ErrorDetail]:
    if f.info.n_samples > f.limits.max_samples:
        yield ErrorDetail("dataset.n_samples", f"{f.info.n_samples} samples is above the cap "
                          f"of {f.limits.max_samples}", f.info.n_samples)


@reads("dataset", "model.input_dim")
def input_dim_matches_dataset(f: Facts) -> Iterator[ErrorDetail]:
    given, features, shape = f.spec.model.input_dim, f.info.n_features, f.info.shape
    if given is None:
        return
    if len(shape) != 1:
        yield ErrorDetail("model.input_dim", f"the dataset's samples have the shape "
                          f"{show(shape)}, not {given} features; set input_shape to "
                          f"{list(shape)} instead, or leave input_dim out", given)
    elif given != features:
        yield ErrorDetail("model.input_dim", f"{given} does not match the dataset's {features} "
                          f"features; set it to {features} or leave it out", given)


@reads("dataset", "model.input_shape")
def input_shape_matches_dataset(f: Facts) -> Iterator[ErrorDetail]:
    given, shape = f.spec.model.input_shape, f.info.shape
    if given is not None and tuple(given) != shape:
        yield ErrorDetail("model.input_shape", f"{given} does not match the shape of the "
                          f"dataset's samples, {list(shape)}; set it to {list(shape)} or leave "
                          "it out", given)


@reads("dataset", "model.layers", "model.uploaded")
def model_graph(f: Facts) -> Iterator[ErrorDetail]:
    """How the layers connect and whether each fits its input (:mod:`.graph`)."""
    yield from f.model_errors


@reads("dataset", "model.layers", "model.uploaded")
def output_is_a_vector(f: Facts) -> Iterator[ErrorDetail]:
    """The loss compares one vector per sample with the target."""
    g = f.graph
    if g is None or len(g.output_shape) == 1:
        return
    i = g.output_index
    where = "model.uploaded" if f.spec.model.uploaded else f"model.layers.{i}"
    yield ErrorDetail(where, f"model.layers.{i} ({g.layers[i].type}): the model's output (the "
                      f"last layer) is {show(g.output_shape)} per sample, but it must be one "
                      "vector per sample; end with flatten or a global pooling layer, then "
                      "dense", list(g.output_shape))


@reads(OUTPUT)
def has_dense_output(f: Facts) -> Iterator[ErrorDetail]:
    if f.graph is not None and not any(li.type == "dense" for li in f.graph.layers):
        yield ErrorDetail("model.layers", "the model needs at least one dense layer")


# --- loss, output layer and task ------------------------------------------------------------


@reads("dataset", OUTPUT, "compile.loss")
def loss_vs_task(f: Facts) -> Iterator[ErrorDetail]:
    """A classification loss on a regression set, the reverse, and binary on >2 classes."""
    if not f.has_output:
        return
    if not f.classifies and f.loss in CLASSIFICATION_LOSSES:
        yield ErrorDetail("compile.loss", f"{f.loss!r} is a classification loss but the dataset "
                          "is regression; use 'mse', 'mae' or 'huber'", f.loss)
    elif f.classifies and f.loss in REGRESSION_LOSSES:
        yield ErrorDetail("compile.loss", f"{f.loss!r} is a regression loss but the dataset has "
                          f"{f.n_classes} classes; use 'sparse_categorical_crossentropy'"
                          + (" or 'binary_crossentropy'" if f.n_classes == 2 else ""), f.loss)
    elif f.classifies and f.loss == "binary_crossentropy" and f.n_classes != 2:
        yield ErrorDetail("compile.loss", f"binary_crossentropy needs 2 classes, the dataset "
                          f"has {f.n_classes}; use 'sparse_categorical_crossentropy'", f.loss)


@reads("dataset", OUTPUT)
def regression_output(f: Facts) -> Iterator[ErrorDetail]:
    """A regression set ends in one unsquashed unit."""
    if not f.has_output or f.classifies:
        return
    if f.out_units != 1:
        yield ErrorDetail(f.units_loc, f"a regression output has 1 unit, got {f.out_units}; "
                          "set units to 1", f.out_units)
    if f.out_act in ("softmax", "sigmoid"):
        yield ErrorDetail(f.act_loc, f"{f.out_act!r} squashes a regression output; use "
                          "'linear'", f.out_act)


@reads("dataset", OUTPUT, "compile.loss")
def binary_crossentropy_output(f: Facts) -> Iterator[ErrorDetail]:
    """binary_crossentropy reads one sigmoid unit (or one logit)."""
    if not (f.has_output and f.classifies and f.loss == "binary_crossentropy"):
        return
    if f.out_units != 1 or f.out_act not in ("sigmoid", "linear"):
        wrong_units = f.out_units != 1
        yield ErrorDetail(f.units_loc if wrong_units else f.act_loc,
                          "binary_crossentropy needs a 1-unit sigmoid output, got "
                          f"{f.out_units} unit(s) with {f.out_act!r}; set units 1 and "
                          "activation 'sigmoid'", f.out_units if wrong_units else f.out_act)


@reads("dataset", OUTPUT, "compile.loss")
def softmax_width_vs_classes(f: Facts) -> Iterator[ErrorDetail]:
    """The categorical losses read one softmax unit (or logit) per class."""
    if not (f.has_output and f.classifies) or f.loss in REGRESSION_LOSSES \
            or f.loss == "binary_crossentropy":
        return
    if f.out_units != f.n_classes:
        yield ErrorDetail(f.units_loc, f"the output layer has {f.out_units} units but the "
                          f"dataset has {f.n_classes} classes; set units to {f.n_classes}",
                          f.out_units)
    if f.out_act not in ("softmax", "linear"):
        yield ErrorDetail(f.act_loc, f"{f.loss} needs a 'softmax' output (or 'linear' for "
                          f"logits), got {f.out_act!r}", f.out_act)


@reads(OUTPUT)
def softmax_over_one_unit(f: Facts) -> Iterator[ErrorDetail]:
    if f.out_act == "softmax" and f.out_units == 1:
        yield ErrorDetail(f.act_loc, "softmax over 1 unit is always 1.0; use 'sigmoid' for a "
                          "single output", f.out_act)


@reads("dataset", OUTPUT, "compile.loss", "compile.metrics")
def metrics_vs_task(f: Facts) -> Iterator[ErrorDetail]:
    binary = f.loss == "binary_crossentropy"
    for i, metric in enumerate(f.spec.compile.metrics):
        loc = f"compile.metrics.{i}"
        if metric == "accuracy" and not f.classifies:
            yield ErrorDetail(loc, "accuracy needs a classification dataset; use 'mae' or "
                              "'mse'", metric)
        if metric in ("auc", "precision", "recall") and not binary:
            yield ErrorDetail(loc, f"{metric!r} works on binary classification "
                              "(binary_crossentropy, 1 sigmoid unit)", metric)
        if metric in ("mae", "mse") and f.classifies and not binary:
            yield ErrorDetail(loc, f"{metric!r} on class labels with a {f.out_units}-way "
                              "output is meaningless; use 'accuracy'", metric)


# --- fit ------------------------------------------------------------------------------------


@reads("dataset", "fit.validation_split")
def validation_split_leaves_both(f: Facts) -> Iterator[ErrorDetail]:
    split, n_samples = f.spec.fit.validation_split, f.info.n_samples
    n_train, n_val = split_sizes(n_samples, split)
    if n_train < 1:
        yield ErrorDetail("fit.validation_split", f"{split} leaves no training samples", split)
    if split > 0 and n_val == 0:
        yield ErrorDetail("fit.validation_split", f"{split} of {n_samples} samples is 0 "
                          "validation samples; raise it", split)


@reads("dataset", "fit.validation_split", "fit.gradient_descent", "fit.batch_size")
def gradient_descent_vs_batch_size(f: Facts) -> Iterator[ErrorDetail]:
    """An explicit batch_size must agree with the gradient_descent it is given with."""
    gd, given, n_train = f.spec.fit.gradient_descent, f.spec.fit.batch_size, f.n_train
    if gd == "batch" and given is not None and given != n_train:
        yield ErrorDetail("fit.batch_size", f"gradient_descent 'batch' uses all {n_train} "
                          f"training samples per update, but batch_size is {given}; remove "
                          f"batch_size or set it to {n_train}", given)
    elif gd == "stochastic" and given is not None and given != 1:
        yield ErrorDetail("fit.batch_size", f"gradient_descent 'stochastic' uses 1 sample per "
                          f"update, but batch_size is {given}; remove batch_size or set it to 1",
                          given)
    elif gd == "mini_batch" and not 1 < f.batch_size < n_train:
        yield ErrorDetail("fit.batch_size", f"gradient_descent 'mini_batch' needs 1 < "
                          f"batch_size < {n_train} (training samples), got {f.batch_size}",
                          f.batch_size)


@reads("dataset", "fit.validation_split", "fit.gradient_descent", "fit.batch_size")
def batch_size_vs_training_set(f: Facts) -> Iterator[ErrorDetail]:
    if f.spec.fit.gradient_descent is None and f.batch_size > f.n_train:
        yield ErrorDetail("fit.batch_size", f"{f.batch_size} is larger than the {f.n_train} "
                          f"training samples; use at most {f.n_train}", f.batch_size)


@reads("fit.epochs")
def epoch_cap(f: Facts) -> Iterator[ErrorDetail]:
    epochs = f.spec.fit.epochs
    if epochs > f.limits.max_epochs:
        yield ErrorDetail("fit.epochs", f"{epochs} is above the cap of {f.limits.max_epochs} "
                          "epochs", epochs)


@reads("fit.steps_per_execution")
def steps_per_execution_positive(f: Facts) -> Iterator[ErrorDetail]:
    spe = f.spec.fit.steps_per_execution
    if isinstance(spe, int) and spe < 1:
        yield ErrorDetail("fit.steps_per_execution", "must be >= 1 or 'auto'", spe)


@reads("fit.early_stopping", "compile.metrics", "dataset", "fit.validation_split")
def early_stopping_monitor(f: Facts) -> Iterator[ErrorDetail]:
    """The monitored quantity must be logged: the loss or a compiled metric, val_ ones only
    with validation data."""
    es = f.spec.fit.early_stopping
    if es is None:
        return
    monitor = es.monitor
    base = monitor.removeprefix("val_")
    known = {"loss", *f.spec.compile.metrics}
    if base not in known:
        yield ErrorDetail("fit.early_stopping.monitor", f"{monitor!r} is not logged; use one "
                          f"of: {', '.join(sorted(known))} (or val_ twins)", monitor)
    elif monitor.startswith("val_") and f.n_val == 0:
        yield ErrorDetail("fit.early_stopping.monitor", f"{monitor!r} needs validation data; "
                          f"set fit.validation_split > 0 or monitor {base!r}", monitor)


@reads("dataset", "model.layers", "model.uploaded")
def param_cap(f: Facts) -> Iterator[ErrorDetail]:
    if f.total_params > f.limits.max_params:
        yield ErrorDetail("model.layers", f"the model has {f.total_params:,} parameters, above "
                          f"the cap of {f.limits.max_params:,}; use fewer units",
                          f.total_params)


@reads("dataset", "model.layers", "model.uploaded", "fit", "compile.optimizer")
def memory_budget(f: Facts) -> Iterator[ErrorDetail]:
    if f.graph is None:
        return
    need = estimate(f.spec, plan_of(f))
    if need.total > f.limits.max_job_memory_mb * MB:
        yield ErrorDetail("dataset", f"training this job would take {need.describe()}, above "
                          f"the per-job budget of {f.limits.max_job_memory_mb:,} MB "
                          "(KERASYARD_MAX_JOB_MEMORY_MB); use fewer samples or features, a "
                          "smaller batch or validation split, or narrower layers"
                          + _streaming_note(f),
                          round(need.total / MB))


def _streaming_note(f: Facts) -> str:
    """What the memory message adds about streaming: only an uploaded .npz streams."""
    if getattr(f.info, "streamable", False):
        return (". The dataset is already streamed from disk and counted as index vectors, "
                "targets, a few batches and one chunk: the rest is the model's (weights, "
                "activations, the validation pass)")
    return (". Only an uploaded .npz (POST /api/v1/datasets, Content-Type: application/x-npz) "
            "is streamed from disk when it does not fit: generated and CSV sets are held "
            "in memory whole")


# In the order their errors are reported.
RULES: tuple[Rule, ...] = (
    sample_cap,
    input_dim_matches_dataset,
    input_shape_matches_dataset,
    model_graph,
    output_is_a_vector,
    has_dense_output,
    loss_vs_task,
    regression_output,
    binary_crossentropy_output,
    softmax_width_vs_classes,
    softmax_over_one_unit,
    metrics_vs_task,
    validation_split_leaves_both,
    gradient_descent_vs_batch_size,
    batch_size_vs_training_set,
    epoch_cap,
    steps_per_execution_positive,
    early_stopping_monitor,
    param_cap,
    memory_budget,
)


def plan_of(f: Facts) -> TrainingPlan:
    epochs = f.spec.fit.epochs
    steps = math.ceil(f.n_train / f.batch_size)
    g = f.graph
    plan = TrainingPlan(
        input_dim=f.info.n_features, n_samples=f.info.n_samples, n_train=f.n_train,
        n_val=f.n_val, task=f.info.task, n_classes=f.info.n_classes, batch_size=f.batch_size,
        epochs=epochs, steps_per_epoch=steps, total_updates=steps * epochs,
        total_params=f.total_params, gradient_descent=gradient_descent_name(f.batch_size,
                                                                            f.n_train),
        output_units=f.out_units or 0, output_activation=f.out_act,
        input_shape=list(f.info.shape), layers=g.as_dicts() if g else [],
        input_dtype=g.input_dtype if g else "float32",
        activations=activations_per_sample(g) if g else f.info.n_features,
    )
    if streams(f.spec, plan, f.info, f.limits.max_job_memory_mb * MB):
        plan = dataclasses.replace(plan, streamed=True)
    return plan
