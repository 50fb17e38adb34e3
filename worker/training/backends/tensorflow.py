"""The TensorFlow backend's training loop behind :func:`worker.training.trainer.fit`.

The worker's training code is backend-neutral; this module is where the TensorFlow backend
gets a loop of its own (why, and what it keeps of ``Model.fit``: :mod:`worker.training.trainer`).
It is imported only when Keras runs on TensorFlow, and imports nothing of the worker's (the
epoch orders come in from the trainer).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def results(model) -> dict[str, float]:
    """The model's metric results now (a pack's: every active tower's, prefixed)."""
    return {k: float(keras.ops.convert_to_numpy(v))
            for k, v in model.get_metrics_result().items()}


class TFLoop:
    """One fit on the TensorFlow backend (see :mod:`worker.training.trainer`)."""

    def __init__(self, model, x, y, batch_size: int, steps: int, spe: int):
        self.model = model
        # tf.identity places the data where the ops run (a GPU when there is one) once,
        # rather than copying it from host memory at every execution.
        self.x, self.y = (tf.identity(tf.convert_to_tensor(a)) for a in (x, y))
        self.n, self.batch_size, self.steps, self.spe = len(x), batch_size, steps, spe
        self._execution = self._evaluate = None
        self._built_for: object = None

    def _functions(self):
        """The compiled train execution and evaluation, rebuilt when a pack's active towers
        change (a tower that left is not in the traced step)."""
        key = tuple(getattr(self.model, "active", ()))
        if self._execution is None or key != self._built_for:
            self._execution, self._evaluate = self._make_execution(), self._make_evaluate()
            self._built_for = key
        return self._execution, self._evaluate

    def _make_execution(self):
        model, bs, spe = self.model, self.batch_size, self.spe
        step = model.train_step
        if model.jit_compile is True:
            # XLA wants static shapes, and the last batch of an epoch may be short: each step
            # is compiled, the loop around it is not (as Model.fit does it).
            step = tf.function(step, jit_compile=True, reduce_retracing=True)

        @tf.function(reduce_retracing=True)
        def execution(x, y, order, first):
            for s in tf.range(first, first + spe):
                idx = order[s * bs:(s + 1) * bs]
                step((tf.gather(x, idx), tf.gather(y, idx)))

        return execution

    def _make_evaluate(self):
        model = self.model

        @tf.function(jit_compile=model.jit_compile is True, reduce_retracing=True)
        def evaluate(x, y):
            model.test_step((x, y))

        return evaluate

    def fit(self, epochs: int, orders, validation, callbacks, initial_epoch: int = 0
            ) -> dict[str, list[float]]:
        """``orders`` gives each epoch's order of the training rows, from epoch
        ``initial_epoch`` (0-based; a resumed training's first)."""
        model = self.model
        cbs = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs,
                                           steps=self.steps, verbose=0)
        val = None if validation is None else \
            tuple(tf.identity(tf.convert_to_tensor(v)) for v in validation)
        history: dict[str, list[float]] = {}
        model.stop_training = False
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            cbs.on_epoch_begin(epoch)
            execution, evaluate = self._functions()
            order = tf.convert_to_tensor(next(orders), dtype=tf.int32)
            for first in range(0, self.steps, self.spe):
                execution(self.x, self.y, order, tf.constant(first, tf.int32))
            logs = results(model)
            if val is not None:
                model.reset_metrics()
                evaluate(*val)
                logs.update({f"val_{k}": v for k, v in results(model).items()})
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            cbs.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        cbs.on_train_end()
        return history
