"""The worker's training loop (worker/training/trainer.py; worker/training/backends/tensorflow.py
on TensorFlow) trains exactly as Model.fit over the same batches: same weights and training
metrics bit for bit, the callbacks' epoch hooks and stop_training honoured."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from service import jobspec as S
from tests.helpers import lecture_spec
from worker.training import datasets as D
from worker.training import model as M
from worker.training import trainer as F

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the worker's own loop runs on TensorFlow")


def _setup(batch_size: int, optimizer: str = "sgd", dropout: bool = False, spe=None,
           jit: bool = False, epochs: int = 3):
    d = lecture_spec(epochs=epochs, batch_size=batch_size, validation_split=0.2)
    d["dataset"]["n_samples"] = 61  # 48 training rows: a short last batch for most sizes
    d["compile"]["optimizer"] = {"name": optimizer, "learning_rate": 0.05}
    if dropout:
        d["model"]["layers"].insert(1, {"type": "dropout", "rate": 0.3})
    spec, plan = S.validate_job(d)
    data = D.build_dataset(spec, plan)
    yt = M.prepare_targets(data.y_train, spec, plan)
    yv = M.prepare_targets(data.y_val, spec, plan)

    def model():
        keras.utils.set_random_seed(spec.fit.seed)
        m = M.build_model(spec, plan)
        M.compile_model(m, spec, plan, spe or plan.steps_per_epoch)
        if jit:
            m.jit_compile = True
        return m

    return spec, plan, data, yt, yv, model


def _keras_fit(m, spec, plan, data, yt, yv, callbacks=()):
    return m.fit(D.epoch_batches(data.x_train, yt, plan.batch_size, spec.fit.seed),
                 steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs,
                 validation_data=D.epoch_batches(data.x_val, yv, len(data.x_val), 0, False),
                 validation_steps=1, verbose=0, shuffle=False,
                 callbacks=list(callbacks)).history


def _loop_fit(m, spec, plan, data, yt, yv, callbacks=()):
    return F.fit(m, data.x_train, yt, batch_size=plan.batch_size, epochs=plan.epochs,
                 steps_per_execution=m.steps_per_execution, seed=spec.fit.seed,
                 shuffle=spec.fit.shuffle, validation=(data.x_val, yv), callbacks=callbacks)


def _assert_same_training(h_keras, m_keras, h_loop, m_loop):
    assert set(h_keras) == set(h_loop) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert h_keras["loss"] == h_loop["loss"] and h_keras["accuracy"] == h_loop["accuracy"]
    assert all(np.array_equal(a, b) for a, b in zip(m_keras.get_weights(), m_loop.get_weights(),
                                                    strict=True))
    # Validation: the same weights evaluated in a different graph; Grappler's rewrites of the
    # two graphs (fused MatMul+BiasAdd+activation in one, not the other) move the last bits.
    assert h_keras["val_accuracy"] == h_loop["val_accuracy"]
    np.testing.assert_allclose(h_keras["val_loss"], h_loop["val_loss"], rtol=1e-5)


@pytest.mark.parametrize("batch_size,optimizer,dropout,spe", [
    (1, "sgd", False, None),   # stochastic GD, one execution per epoch
    (5, "adam", True, 1),      # a short last batch (48 = 9 x 5 + 3), dropout, a step per call
    (5, "rmsprop", False, 2),  # two executions per epoch
    (48, "sgd", True, None),   # batch GD
])
def test_the_loop_trains_exactly_as_model_fit(batch_size, optimizer, dropout, spe):
    spec, plan, data, yt, yv, model = _setup(batch_size, optimizer, dropout, spe)
    a, b = model(), model()
    _assert_same_training(_keras_fit(a, spec, plan, data, yt, yv), a,
                          _loop_fit(b, spec, plan, data, yt, yv), b)


def test_xla_compiled_steps_train_exactly_as_model_fit_with_xla():
    """A model compiled with jit_compile (a GPU worker's default) gets XLA-compiled steps."""
    spec, plan, data, yt, yv, model = _setup(5, jit=True)
    a, b = model(), model()
    _assert_same_training(_keras_fit(a, spec, plan, data, yt, yv), a,
                          _loop_fit(b, spec, plan, data, yt, yv), b)


def test_callbacks_see_each_epoch_and_stop_training_as_in_model_fit():
    """EarlyStopping (restore_best_weights) through both loops: the same epochs, the same
    restored weights; a callback's hooks are called in Model.fit's order."""
    spec, plan, data, yt, yv, model = _setup(4, epochs=30)
    seen = []

    class Hooks(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("begin")

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(f"b{epoch}")

        def on_epoch_end(self, epoch, logs=None):
            seen.append(f"e{epoch}:{sorted(logs)}")

        def on_train_end(self, logs=None):
            seen.append("end")

    def stopper():
        return keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=2,
                                             restore_best_weights=True)

    a, b = model(), model()
    h_keras = _keras_fit(a, spec, plan, data, yt, yv, [stopper()])
    h_loop = _loop_fit(b, spec, plan, data, yt, yv, [stopper(), Hooks()])
    assert 2 < len(h_loop["loss"]) < 30  # it stopped early
    _assert_same_training(h_keras, a, h_loop, b)
    n = len(h_loop["loss"])
    keys = "['accuracy', 'loss', 'val_accuracy', 'val_loss']"
    assert seen == ["begin"] + [x for e in range(n) for x in (f"b{e}", f"e{e}:{keys}")] + ["end"]


def test_steps_per_execution_must_divide_the_epoch():
    spec, plan, data, yt, yv, model = _setup(5)
    with pytest.raises(ValueError, match="does not divide"):
        F.fit(model(), data.x_train, yt, batch_size=5, epochs=1, steps_per_execution=4, seed=0,
              shuffle=True)


def test_epoch_batches_follow_epoch_orders():
    x = np.arange(10)[:, None]
    orders = D.epoch_orders(10, seed=3)
    gen = D.epoch_batches(x, np.arange(10), 4, seed=3)
    for _ in range(2):
        order = next(orders)
        got = np.concatenate([next(gen)[1] for _ in range(3)])
        assert np.array_equal(got, order)


def test_a_large_training_set_trains_through_model_fit(monkeypatch):
    """Above IN_GRAPH_DATA_MAX the data is not copied into tensors: Model.fit, batch by batch,
    the same order; the memory estimate counts the copy only below it."""
    from service.jobspec import memory

    spec, plan, data, yt, yv, model = _setup(5)
    seen = []
    monkeypatch.setattr(F, "IN_GRAPH_DATA_MAX", 1000)  # bytes: the 48-row set is above it
    a, b = model(), model()
    orig = type(b).fit
    monkeypatch.setattr(type(b), "fit", lambda self, *a, **kw: seen.append(1) or
                        orig(self, *a, **kw))
    h_loop = _loop_fit(b, spec, plan, data, yt, yv)
    assert seen == [1]
    monkeypatch.undo()
    h_keras = _keras_fit(a, spec, plan, data, yt, yv)
    assert h_keras == h_loop
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights(),
                                                    strict=True))
    small = memory.estimate(spec, plan).dataset
    table = plan.n_samples * (plan.input_dim + 1)
    assert small == table * (8 + 4 * 4)  # float64, float32 copy, split, and the tensors
