"""Parameter counting without TensorFlow agrees with Keras; every spec option builds and trains."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from service import jobspec as S
from tests.helpers import lecture_spec, tiny_spec
from worker.training import model as M


def _build(spec_dict):
    spec, plan = S.validate_job(spec_dict)
    return spec, plan, M.build_model(spec, plan)


@pytest.mark.parametrize("layers,input_dim", [
    ([{"type": "dense", "units": 64, "activation": "relu"},
      {"type": "dense", "units": 28, "activation": "relu"},
      {"type": "dense", "units": 10, "activation": "softmax"}], 50),
    ([{"type": "dense", "units": 16, "activation": "tanh", "use_bias": False},
      {"type": "batch_normalization"},
      {"type": "dropout", "rate": 0.3},
      {"type": "activation", "activation": "gelu"},
      {"type": "dense", "units": 10, "activation": "softmax"}], 50),
    ([{"type": "batch_normalization"},
      {"type": "dense", "units": 3, "activation": "selu"},
      {"type": "dense", "units": 10, "activation": "linear"}], 50),
])
def test_count_params_matches_keras(layers, input_dim):
    spec = lecture_spec()
    spec["model"]["layers"] = layers
    _, plan, model = _build(spec)
    assert plan.total_params == model.count_params()
    assert S.count_params(input_dim, S.parse_spec(spec).model.layers) == model.count_params()


@pytest.mark.parametrize("activation", S.ACTIVATIONS)
def test_every_activation_builds(activation):
    spec = tiny_spec()
    spec["model"]["layers"][0]["activation"] = activation
    _, _, model = _build(spec)
    out = keras.ops.convert_to_numpy(model(np.zeros((2, 2), dtype="float32")))
    assert out.shape == (2, 1)


CASES = [
    # loss, output units / activation, metrics, dataset
    ("binary_crossentropy", 1, "sigmoid", ["accuracy", "auc", "precision", "recall"],
     {"kind": "synthetic", "name": "xor", "n_samples": 40}),
    ("binary_crossentropy", 1, "linear", ["accuracy", "auc"],
     {"kind": "synthetic", "name": "gauss", "n_samples": 40}),
    ("sparse_categorical_crossentropy", 3, "softmax", ["accuracy"],
     {"kind": "sklearn", "name": "iris"}),
    ("categorical_crossentropy", 3, "softmax", ["accuracy"], {"kind": "sklearn", "name": "wine"}),
    ("sparse_categorical_crossentropy", 3, "linear", ["accuracy"],
     {"kind": "sklearn", "name": "iris"}),
    ("mse", 1, "linear", ["mae", "mse"], {"kind": "sklearn", "name": "diabetes"}),
    ("mae", 1, "linear", ["mse"], {"kind": "synthetic", "name": "linear", "n_samples": 40}),
    ("huber", 1, "linear", ["mae"], {"kind": "synthetic", "name": "regression",
                                      "n_samples": 40}),
]


OPTIMIZERS = [{"name": "sgd", "momentum": 0.9, "nesterov": True},
              {"name": "adamw", "weight_decay": 0.01}, {"name": "rmsprop"},
              {"name": "adagrad"}]


# Each loss/metric case with two of the optimizers, every optimizer with four cases (not the
# whole cross product: .ci/run has 30 minutes).
PAIRED = [(*c, OPTIMIZERS[(i + k) % len(OPTIMIZERS)]) for i, c in enumerate(CASES)
          for k in (0, 2)]


@pytest.mark.parametrize("loss,units,activation,metrics,dataset,optimizer", PAIRED,
                         ids=[f"{c[0]}-{c[2]}-{c[4]['name']}-{c[5]['name']}" for c in PAIRED])
def test_each_loss_metric_optimizer_trains_one_epoch(loss, units, activation, metrics, dataset,
                                                     optimizer):
    from worker.training import datasets as D

    spec = tiny_spec(dataset=dataset)
    spec["model"]["layers"][1].update(units=units, activation=activation)
    spec["compile"].update(loss=loss, metrics=metrics,
                           optimizer={**optimizer, "learning_rate": 0.01})
    spec["fit"].update(epochs=1, batch_size=8)
    spec, plan, model = _build(spec)
    data = D.build_dataset(spec, plan)
    M.compile_model(model, spec, plan, M.choose_steps_per_execution(plan.steps_per_epoch, 256))
    history = model.fit(D.epoch_batches(data.x_train, M.prepare_targets(data.y_train, spec, plan),
                                        plan.batch_size, 0),
                        steps_per_epoch=plan.steps_per_epoch, epochs=1, verbose=0, shuffle=False)
    logged = history.history
    assert math.isfinite(logged["loss"][0])
    assert set(metrics) <= set(logged), logged.keys()


@pytest.mark.parametrize("steps,cap,expected", [(40, 256, 40), (40, 16, 10), (7, 4, 1),
                                                (1797, 256, 3), (1, 256, 1), (300, 256, 150)])
def test_steps_per_execution_divides_the_epoch(steps, cap, expected):
    assert M.choose_steps_per_execution(steps, cap) == expected
    assert steps % expected == 0
    assert M.choose_steps_per_execution(40, 256, 8) == 8


def test_steps_per_execution_keeps_per_epoch_metrics_exact():
    """Fused steps must not change what each epoch logs: same seed, same numbers."""
    from worker.training import datasets as D

    spec_d = lecture_spec(epochs=3)
    results = []
    for spe in (1, 40):
        spec, plan, model = None, None, None
        keras.utils.set_random_seed(0)
        spec, plan, model = _build(spec_d)
        data = D.build_dataset(spec, plan)
        M.compile_model(model, spec, plan, spe)
        hist = model.fit(D.epoch_batches(data.x_train, data.y_train, plan.batch_size, 0),
                         steps_per_epoch=plan.steps_per_epoch, epochs=3, verbose=0,
                         shuffle=False)
        results.append(hist.history["loss"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


def test_summary_text_shows_the_lecture_quantities():
    _, plan, model = _build(lecture_spec())
    text = M.summary_text(model, plan)
    assert "steps_per_epoch    ceil(200 / 5) = 40" in text
    assert "total_updates      40 x 1000 epochs = 40000" in text
    assert "5,374" in text  # Keras's own summary
