"""Keras model building and compiling from a JobSpec. Backend-neutral: keras only."""

from __future__ import annotations

import numpy as np

from service import jobspec as S


def build_model(spec: S.JobSpec, plan: S.TrainingPlan):
    import keras

    layers: list = [keras.Input(shape=(plan.input_dim,), name="features")]
    for i, layer in enumerate(spec.model.layers):
        name = f"{layer.type}_{i}"
        if isinstance(layer, S.DenseLayer):
            layers.append(keras.layers.Dense(layer.units, activation=layer.activation,
                                             use_bias=layer.use_bias, name=name))
        elif isinstance(layer, S.DropoutLayer):
            layers.append(keras.layers.Dropout(layer.rate, name=name))
        elif isinstance(layer, S.BatchNormalizationLayer):
            layers.append(keras.layers.BatchNormalization(name=name))
        else:
            layers.append(keras.layers.Activation(layer.activation, name=name))
    return keras.Sequential(layers, name="".join(c if c.isalnum() else "_" for c in spec.name))


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
