"""The worker's training loop: ``fit`` for one model or a pack of towers.

On the TensorFlow backend the loop is the worker's own (:mod:`worker.training.backends.tensorflow`,
imported only on that backend): the training data is one tensor, each epoch's order one index
vector, and one compiled function runs ``steps_per_execution`` train steps, gathering each batch
inside the graph. It runs the model's own ``train_step`` and ``test_step`` (its loss, metrics and
optimizer), so the arithmetic is Keras's; what it leaves out is ``Model.fit``'s per-step machinery
(an input iterator, an optional per step, a nested function call per step), most of a step's time on
the lecture MLP (bs=1: 1.8 ms a step through ``Model.fit`` fed by a generator, 0.30 ms in this loop;
``python -m bench.fitloop_bench``, ``bench/README.md``). Same weights and training metrics as
``Model.fit`` over :func:`~.datasets.epoch_batches`, bit for bit (``tests/unit/test_fitloop.py``).

A streamed upload (:mod:`.streaming`: rows gathered from a memory map) trains through
``Model.fit`` over the same :func:`~.datasets.epoch_batches`, validated in batches.

Other backends (JAX), and a training set larger than
:data:`service.jobspec.memory.IN_GRAPH_DATA_MAX` (the loop holds the data as tensors; at that
size the step is what costs, not the loop around it), keep ``Model.fit`` over
:func:`~.datasets.epoch_batches`: the same batches in the same order.

Both call the callbacks' epoch and train hooks (``on_train_begin``, ``on_epoch_begin``,
``on_epoch_end``, ``on_train_end``), honour ``model.stop_training``, and log what ``Model.fit``
logs per epoch: the training metrics, then the validation metrics prefixed ``val_``. Batch
hooks are not called by the TensorFlow loop; nothing in the worker uses them.
"""

from __future__ import annotations

import numpy as np

from service.jobspec.memory import IN_GRAPH_DATA_MAX
from worker.training import datasets as D


def fit(model, x: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int,
        steps_per_execution: int, seed: int, shuffle: bool,
        validation: tuple[np.ndarray, np.ndarray] | None = None, callbacks=(),
        initial_epoch: int = 0, orders: D.EpochOrders | None = None
        ) -> dict[str, list[float]]:
    """Train ``model`` (compiled and, for a pack, built) for ``epochs`` epochs of
    ``ceil(len(x) / batch_size)`` steps; the epoch order is
    :func:`~.datasets.epoch_orders` (``seed``, ``shuffle``); ``validation`` (x, y) is
    evaluated as one batch after each epoch. Returns the per-epoch logs (``Model.fit``'s
    ``history.history``).

    A resumed training (:mod:`.checkpoint`) starts at epoch ``initial_epoch`` (0-based, as
    ``Model.fit`` counts) with ``orders`` standing where the checkpoint left the data order;
    a caller that checkpoints hands in ``orders`` to read that position from."""
    import keras

    steps = -(-len(x) // batch_size)
    if steps % steps_per_execution:
        raise ValueError(f"steps_per_execution {steps_per_execution} does not divide the "
                         f"{steps} steps of an epoch")
    if orders is None:
        orders = D.epoch_orders(len(x), seed, shuffle)
    if getattr(x, "streamed", False):
        return _fit_streamed(model, x, y, batch_size, epochs, orders, validation, callbacks,
                             initial_epoch)
    held = x.nbytes + y.nbytes + (0 if validation is None else
                                  validation[0].nbytes + validation[1].nbytes)
    if keras.backend.backend() != "tensorflow" or held > IN_GRAPH_DATA_MAX:
        return model.fit(
            D.epoch_batches(x, y, batch_size, seed, shuffle, orders), steps_per_epoch=steps,
            epochs=epochs, validation_data=None if validation is None else D.epoch_batches(
                *validation, len(validation[0]), 0, shuffle=False),
            validation_steps=None if validation is None else 1, callbacks=list(callbacks),
            verbose=0, shuffle=False, initial_epoch=initial_epoch).history
    from worker.training.backends.tensorflow import TFLoop

    return TFLoop(model, x, y, batch_size, steps, steps_per_execution).fit(
        epochs, orders, validation, callbacks, initial_epoch)


def _fit_streamed(model, x, y, batch_size, epochs, orders, validation, callbacks,
                  initial_epoch):
    """``Model.fit`` over :func:`~.datasets.epoch_batches` of streamed rows
    (:class:`~.streaming.StreamedRows`, gathered from a memory map batch by batch): the
    batches the in-memory path trains on; the validation set is evaluated in batches of
    ``batch_size``, never held whole."""
    import keras

    class Batches(keras.utils.PyDataset):
        """The validation set's batches by number: the same ones every epoch however far
        Keras's input pipeline reads ahead."""

        def __len__(self):
            return -(-len(validation[0]) // batch_size)

        def __getitem__(self, i):
            return tuple(part[i * batch_size:(i + 1) * batch_size] for part in validation)

    steps = -(-len(x) // batch_size)
    return model.fit(
        D.epoch_batches(x, y, batch_size, 0, orders=orders), steps_per_epoch=steps,
        epochs=epochs, validation_data=None if validation is None else Batches(),
        callbacks=list(callbacks), verbose=0, shuffle=False,
        initial_epoch=initial_epoch).history
