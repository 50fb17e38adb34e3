"""Keras model building and compiling from a JobSpec. Backend-neutral: keras only.

A spec's layer is ``keras.layers.<Class>(**fields)``: its ``type`` is the Keras class name in
snake_case and its fields the constructor's arguments (:mod:`service.jobspec.layers`), so
:func:`make_layer` builds every layer type the same way. A spec whose layers carry no ``name``
and no ``inputs`` is a ``keras.Sequential`` stack (the lecture's MLP, unchanged); otherwise a
functional ``keras.Model`` whose layers take the layers their ``inputs`` name.
"""

from __future__ import annotations

import functools

import numpy as np

from service import jobspec as S
from service.jobspec.layers import INPUT, MERGE_TYPES

SEQUENTIAL_INPUT = "features"  # the Sequential stack's input layer (the lecture's name)


@functools.cache
def _keras_classes() -> dict:
    import keras

    return {n.lower(): getattr(keras.layers, n) for n in dir(keras.layers)
            if isinstance(getattr(keras.layers, n), type)}


def keras_class(layer_type: str):
    """The ``keras.layers`` class of a spec layer type (``conv2d`` -> ``Conv2D``)."""
    return _keras_classes()[layer_type.replace("_", "")]


def layer_name(layer, index: int) -> str:
    """A layer's Keras name: its spec name, else ``<type>_<index>``."""
    return layer.name or f"{layer.type}_{index}"


def make_layer(layer, name: str | None = None):
    """``keras.layers.<Class>(**fields)`` for one spec layer (``bidirectional`` wraps the
    recurrent layer its ``layer`` field describes; ``concatenate``'s ``axis`` counts a
    sample's axes, Keras's the batch's too)."""
    fields = layer.model_dump(exclude={"type", "name", "inputs"})
    if layer.type == "bidirectional":
        fields["layer"] = make_layer(layer.layer)
    if layer.type == "concatenate" and fields["axis"] >= 0:
        fields["axis"] += 1
    if "target_shape" in fields:
        fields["target_shape"] = tuple(fields["target_shape"])
    return keras_class(layer.type)(**fields, **({"name": name} if name else {}))


def is_graph(layers: list) -> bool:
    """True when any layer has a ``name`` or ``inputs``: a functional model, not a stack."""
    return any(layer.name is not None or layer.inputs is not None for layer in layers)


def _input_shape(plan: S.TrainingPlan) -> tuple[int, ...]:
    return tuple(plan.input_shape or (plan.input_dim,))


def build_model(spec: S.JobSpec, plan: S.TrainingPlan, uploaded=None):
    """The job's Keras model, not compiled.

    Args:
        spec: The validated job spec.
        plan: Its plan: the input's shape and dtype (``int32`` when an embedding reads the
            token ids, :func:`service.jobspec.graph.infer`).
        uploaded: An uploaded model already loaded (:mod:`worker.training.uploaded`); it is
            the job's model as it is. Required when ``spec.model.uploaded`` is set.

    Returns:
        :func:`build_layers`'s model, or ``uploaded``.

    Raises:
        ValueError: ``spec.model.uploaded`` is set and no loaded model was handed in.
    """
    if uploaded is not None:
        return uploaded
    if spec.model.layers is None:
        raise ValueError(f"model.uploaded {spec.model.uploaded!r}: load the uploaded model "
                         "(worker.training.uploaded) and pass it to build_model(uploaded=...)")
    return build_layers(spec.model.layers, _input_shape(plan), plan.input_dtype,
                        "".join(c if c.isalnum() else "_" for c in spec.name))


def build_layers(layers: list, input_shape, dtype: str = "float32", name: str | None = None):
    """A Keras model of spec ``layers`` (:mod:`service.jobspec.layers`) on inputs of one
    sample's ``input_shape`` and ``dtype``: a ``keras.Sequential`` stack when no layer has a
    ``name`` or ``inputs`` (its input layer named ``features``), else a functional
    ``keras.Model`` (its input named ``input``; a layer takes the layers its ``inputs`` name,
    by default the one before it; the last layer is the output). Each Keras layer is named
    as the spec names it, else ``<type>_<index>``."""
    import keras

    shape = tuple(input_shape)
    if not is_graph(layers):
        return keras.Sequential(
            [keras.Input(shape=shape, dtype=dtype, name=SEQUENTIAL_INPUT)]
            + [make_layer(layer, layer_name(layer, i)) for i, layer in enumerate(layers)],
            name=name)
    inp = keras.Input(shape=shape, dtype=dtype, name=INPUT)
    outputs: dict[str, object] = {INPUT: inp}
    last = INPUT
    for i, layer in enumerate(layers):
        lname = layer_name(layer, i)
        taken = [outputs[src] for src in (layer.inputs or [last])]
        outputs[lname] = make_layer(layer, lname)(taken if layer.type in MERGE_TYPES
                                                  else taken[0])
        last = lname
    return keras.Model(inp, outputs[last], name=name)


def make_optimizer(opt: S.OptimizerSpec):
    import keras

    lr = opt.learning_rate
    if opt.name == "sgd":
        return keras.optimizers.SGD(lr, momentum=opt.momentum, nesterov=opt.nesterov)
    if opt.name == "adam":
        return keras.optimizers.Adam(lr)
    if opt.name == "adamw":
        wd = 0.004 if opt.weight_decay is None else opt.weight_decay
        return keras.optimizers.AdamW(lr, weight_decay=wd)
    if opt.name == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=opt.momentum)
    return keras.optimizers.Adagrad(lr)


def make_loss(loss: str, from_logits: bool):
    import keras

    return {
        "binary_crossentropy": lambda: keras.losses.BinaryCrossentropy(from_logits=from_logits),
        "sparse_categorical_crossentropy":
            lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        "categorical_crossentropy":
            lambda: keras.losses.CategoricalCrossentropy(from_logits=from_logits),
        "mse": keras.losses.MeanSquaredError,
        "mae": keras.losses.MeanAbsoluteError,
        "huber": keras.losses.Huber,
    }[loss]()


def make_metric(name: str, loss: str, from_logits: bool):
    import keras

    threshold = 0.0 if from_logits else 0.5
    if name == "accuracy":
        if loss == "binary_crossentropy":
            return keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold)
        if loss == "categorical_crossentropy":
            return keras.metrics.CategoricalAccuracy(name="accuracy")
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if name == "auc":
        return keras.metrics.AUC(name="auc", from_logits=from_logits)
    if name == "precision":
        return keras.metrics.Precision(thresholds=threshold, name="precision")
    if name == "recall":
        return keras.metrics.Recall(thresholds=threshold, name="recall")
    if name == "mae":
        return keras.metrics.MeanAbsoluteError(name="mae")
    return keras.metrics.MeanSquaredError(name="mse")


def choose_steps_per_execution(steps_per_epoch: int, cap: int, requested: int | str = "auto"
                               ) -> int:
    """Train steps fused into one compiled call.

    Keras runs an execution's steps without stopping and calls epoch callbacks between
    executions, so the value must divide steps_per_epoch, or an execution would run into the
    next epoch and per-epoch metrics would be off. 'auto' takes the largest divisor <= cap.
    """
    target = min(steps_per_epoch, cap if requested == "auto" else int(requested))
    for k in range(max(target, 1), 0, -1):
        if steps_per_epoch % k == 0:
            return k
    return 1


def prepare_targets(y: np.ndarray | None, spec: S.JobSpec, plan: S.TrainingPlan):
    """Targets in the shape the loss wants: one-hot for categorical, a column for 1-unit heads."""
    if y is None:
        return None
    if spec.compile.loss == "categorical_crossentropy":
        return np.eye(plan.n_classes or 2, dtype="float32")[y]
    if plan.output_units == 1:
        return y.astype("float32").reshape(-1, 1)
    return y


def compile_model(model, spec: S.JobSpec, plan: S.TrainingPlan, steps_per_execution: int) -> None:
    from_logits = plan.output_activation == "linear" and plan.task == "classification"
    model.compile(
        optimizer=make_optimizer(spec.compile.optimizer),
        loss=make_loss(spec.compile.loss, from_logits),
        metrics=[make_metric(m, spec.compile.loss, from_logits) for m in spec.compile.metrics],
        steps_per_execution=steps_per_execution,
    )


def summary_text(model, plan: S.TrainingPlan) -> str:
    """model_summary.txt: the lecture's quantities for this run (updates an epoch, total
    updates, parameters), then Keras's summary of the built model (each layer's output shape
    and parameters)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    shape = getattr(plan, "input_shape", None)
    head = [
        "The lecture's quantities for this run",
        f"  input_dim          {plan.input_dim}",
        *([f"  input_shape        {tuple(shape)} per sample"] if shape else []),
        f"  n_train / n_val    {plan.n_train} / {plan.n_val}",
        f"  batch_size         {plan.batch_size}  ({plan.gradient_descent} gradient descent)",
        f"  steps_per_epoch    ceil({plan.n_train} / {plan.batch_size}) = {plan.steps_per_epoch}",
        (f"  total_updates      {plan.steps_per_epoch} x {plan.epochs} epochs = "
         f"{plan.total_updates}"),
        f"  total_params       {plan.total_params}",
        "",
    ]
    return "\n".join(head + lines) + "\n"
