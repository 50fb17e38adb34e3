"""Packed trials: towers trained as one model equal separate trainings, bit for bit (TF)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from service import jobspec as S
from service.jobspec.plan import Limits
from service.jobspec.sweep_checks import validate_sweep
from tests.helpers import ROOT, lecture_spec
from worker.sweeps import pack as P
from worker.training import datasets as D
from worker.training import model as M
from worker.training import trainer as F


def _base() -> dict:
    spec = lecture_spec(epochs=3, validation_split=0.2, batch_size=8)
    spec["dataset"]["n_samples"] = 60
    return spec


def _variant(act: str, units: int = 64, lr: float = 0.01, opt: str = "sgd",
             dropout: float = 0.0) -> dict:
    spec = _base()
    spec["model"]["layers"][0].update(activation=act, units=units)
    spec["compile"]["optimizer"].update(name=opt, learning_rate=lr)
    if dropout:
        spec["model"]["layers"].insert(1, {"type": "dropout", "rate": dropout})
    return spec


def _prepared(spec_dict: dict):
    spec, plan = S.validate_job(spec_dict)
    data = D.build_dataset(spec, plan)
    return spec, plan, data, M.prepare_targets(data.y_train, spec, plan), \
        M.prepare_targets(data.y_val, spec, plan)


def _model(spec, plan, spe):
    keras.utils.set_random_seed(spec.fit.seed)
    model = M.build_model(spec, plan)
    M.compile_model(model, spec, plan, spe)
    return model


def _fit(model, spec, plan, data, yt, yv, callbacks=()):
    return F.fit(model, data.x_train, yt, batch_size=plan.batch_size, epochs=plan.epochs,
                 steps_per_execution=model.steps_per_execution, seed=spec.fit.seed,
                 shuffle=spec.fit.shuffle, validation=(data.x_val, yv), callbacks=callbacks)


def _separate(spec_dict: dict, spe: int):
    spec, plan, data, yt, yv = _prepared(spec_dict)
    model = _model(spec, plan, spe)
    return _fit(model, spec, plan, data, yt, yv), model.get_weights()


def _packed(spec_dicts: list[dict], spe: int, callbacks=()):
    towers = []
    for d in spec_dicts:
        spec, plan, data, yt, yv = _prepared(d)
        towers.append(_model(spec, plan, spe))
    pk = P.make_pack(towers, spe, (data.x_train[:plan.batch_size], yt[:plan.batch_size]))
    hist = _fit(pk, spec, plan, data, yt, yv, [c(pk) for c in callbacks])
    out = []
    for i, tower in enumerate(towers):
        # A tower that left the pack has no keys in the later epochs' logs.
        per_epoch = [P.tower_logs({k: v[e] for k, v in hist.items() if len(v) > e}, i)
                     for e in range(max(len(v) for v in hist.values()))]
        out.append(({k: [m[k] for m in per_epoch if k in m] for k in per_epoch[0]},
                    tower.get_weights()))
    return out


def _assert_same(separate, packed):
    (h1, w1), (h2, w2) = separate, packed
    assert set(h1) == set(h2) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert h1 == h2  # bit for bit, every epoch
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2, strict=True))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF packs")
@pytest.mark.parametrize("spe", [1, 3])
def test_three_activations_pack_equals_separate_trainings(spe):
    specs = [_variant(a) for a in ("sigmoid", "relu", "tanh")]
    for spec, packed in zip(specs, _packed(specs, spe), strict=True):
        _assert_same(_separate(spec, spe), packed)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF packs")
def test_pack_mixing_units_learning_rates_optimizers_and_dropout_equals_separate_trainings():
    """Dropout too: each tower's Dropout layer draws from its own seed generator, seeded when
    the tower is built, so its masks are a separate training's."""
    specs = [_variant("relu", 64, 0.01), _variant("tanh", 16, 0.1),
             _variant("sigmoid", 32, 0.003, "adam"), _variant("relu", 8, 0.05, "rmsprop"),
             _variant("relu", 32, 0.05, dropout=0.3), _variant("tanh", 32, 0.05, dropout=0.5)]
    for spec, packed in zip(specs, _packed(specs, 1), strict=True):
        _assert_same(_separate(spec, 1), packed)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF packs")
def test_a_frozen_tower_keeps_its_weights_and_the_others_train_on_exactly():
    specs = [_variant("relu"), _variant("tanh", lr=1e6), _variant("sigmoid")]
    kept = {}

    class FreezeAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                kept["w"] = [np.array(w) for w in self.model.towers[1].get_weights()]
                self.model.freeze([1])

    packed = _packed(specs, 1, [lambda pk: FreezeAfterFirstEpoch()])
    assert all(np.array_equal(a, b, equal_nan=True)
               for a, b in zip(kept["w"], packed[1][1], strict=True))
    assert len(packed[1][0]["loss"]) == 1  # no metrics after it left the pack
    for i in (0, 2):
        _assert_same(_separate(specs[i], 1), packed[i])


def test_tower_logs_map_back_to_the_trials_own_names():
    logs = {"t0/loss": 1.0, "t1/loss": 2.0, "t1/accuracy": 0.5, "val_t1/loss": 3.0,
            "val_t10/loss": 9.0}
    assert P.tower_logs(logs, 1) == {"loss": 2.0, "accuracy": 0.5, "val_loss": 3.0}
    assert P.tower_logs(logs, 10) == {"val_loss": 9.0}


def test_towers_group_the_trials_that_differ_only_in_epochs():
    from service.worker_api import SharedTrial

    def trial(i, act, epochs):
        spec = _variant(act)
        spec["fit"]["epochs"], spec["name"] = epochs, f"t{i}"
        return SharedTrial(id=str(i), name=f"t{i}", spec=spec, epochs=epochs, number=i,
                           params={})

    own = _variant("relu")
    own["fit"]["epochs"] = 200
    shared = [trial(1, "relu", 50), trial(2, "tanh", 200), trial(3, "tanh", 10)]
    towers = P.towers_of(own, 200, shared)
    assert [[t.id for t in tw.trials] for tw in towers] == [["1"], ["2", "3"]]
    assert [tw.epochs for tw in towers] == [200, 200]
    assert P.is_pack(own, shared) and not P.is_pack(own, shared[:1])


# --- the plan: which trials pack -------------------------------------------------------------


def _lecture_sweep() -> dict:
    return json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())


def test_lecture_sweep_packs_into_one_training_per_batch_size():
    _, plan = validate_sweep(_lecture_sweep())
    assert plan.pack and len(plan.packs) == 4
    assert sorted(i for p in plan.packs for i in p) == list(range(36))
    for p in plan.packs:
        sizes = {plan.configs[i]["fit.batch_size"] for i in p}
        assert len(sizes) == 1
        assert plan.configs[p[0]]["fit.epochs"] == 200  # the longest training leads
    assert "12 towers in 4 trainings" in plan.pack_why


def test_pack_false_and_caps():
    sweep = _lecture_sweep()
    sweep["pack"] = False
    _, plan = validate_sweep(sweep)
    assert not plan.pack and plan.packs is None and plan.pack_why == "pack is false"
    _, plan = validate_sweep(_lecture_sweep(), Limits(pack_max_towers=2))
    assert plan.pack and len(plan.packs) == 8  # 3 towers per batch size, 2 per pack
    _, plan = validate_sweep(_lecture_sweep(), Limits(pack_max_towers=1))
    assert not plan.pack and "at most 1 tower" in plan.pack_why
    gpu = _lecture_sweep() | {"resources": {"queue": "gpu"}}
    _, plan = validate_sweep(gpu, Limits(pack_max_towers=2, pack_max_towers_gpu=3))
    assert len(plan.packs) == 4
    # The memory estimate (per job: the dataset ~24 MB, its tensors in the TensorFlow loop
    # included; each tower ~3 MB more).
    big = _lecture_sweep()
    big["base"]["dataset"]["n_samples"] = 20_000
    _, plan = validate_sweep(big, Limits(max_job_memory_mb=28))
    assert not plan.pack and "memory estimate" in plan.pack_why
    _, plan = validate_sweep(big, Limits(max_job_memory_mb=30))
    assert plan.pack and len(plan.packs) == 8 and "memory estimate" in plan.pack_why


def test_random_sweeps_do_not_pack():
    sweep = _lecture_sweep() | {"method": "random", "max_trials": 4}
    _, plan = validate_sweep(sweep)
    assert not plan.pack and "grid" in plan.pack_why


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF packs")
def test_the_pack_callback_maps_logs_and_takes_diverged_and_cancelled_towers_out():
    """Through the worker's callback: tower 1 diverges (1e12) and leaves with its weights
    kept; tower 2's trial is cancelled after the first epoch and leaves; tower 0 trains on to
    the end, exactly as alone, and only its epochs go to the job's reporter."""
    from service.worker_api import SharedTrial
    from worker.recording.reporter import Signals

    specs = [_variant("relu"), _variant("tanh", lr=1e12), _variant("sigmoid")]
    spec, plan, data, yt, yv = _prepared(specs[0])
    towers = []
    for i, d in enumerate(specs):
        trials = [] if i == 0 else [SharedTrial(id=f"trial-{i}", name=str(i), spec=d,
                                                epochs=3, number=i, params={})]
        t = P.Tower(i, d, trials, 3)
        t.spec, t.plan = S.validate_job(d)
        t.model = _model(t.spec, t.plan, 1)
        towers.append(t)

    class JobEpochs:  # what the job's Reporter is handed
        got: list = []

        def epoch(self, e, metrics):
            self.got.append(e)

    def progress():
        if towers[2].history:
            towers[2].cancelled = {"trial-2"}

    cb = P.pack_callback(towers, JobEpochs(), Signals(), on_progress=progress,
                         progress_interval_s=0.0)
    pk = P.make_pack([t.model for t in towers], 1, (data.x_train[:8], yt[:8]))
    _fit(pk, spec, plan, data, yt, yv, [cb])
    assert [t.ended for t in towers] == ["done", "diverged", "cancelled"]
    assert [len(t.history) for t in towers] == [3, towers[1].ended_at, 1]
    assert not P.diverged(towers[0].history[-1]) and P.diverged(towers[1].history[-1])
    assert JobEpochs.got == [1, 2, 3] and cb.nan_epoch is None and not cb.cancelled
    alone_history, alone_weights = _separate(specs[0], 1)
    assert [h["val_loss"] for h in towers[0].history] == alone_history["val_loss"]
    assert all(np.array_equal(a, b) for a, b in
               zip(alone_weights, towers[0].model.get_weights(), strict=True))


JAX_CHECK = """
import numpy as np
import keras
from service import jobspec as S
from service.worker_api import SharedTrial
from tests.unit.test_pack import _fit, _model, _prepared, _separate, _variant
from worker.sweeps import pack as P
from worker.recording.reporter import Signals

assert keras.backend.backend() == "jax" and not P.backend_packs()
specs = [_variant("relu"), _variant("tanh", 16, 0.1), _variant("sigmoid", 32, 0.003, "adam")]
spec, plan, data, yt, yv = _prepared(specs[0])
towers = []
for i, d in enumerate(specs):
    trials = [] if i == 0 else [SharedTrial(id=str(i), name=str(i), spec=d, epochs=3,
                                            number=i, params={})]
    t = P.Tower(i, d, trials, 3)
    t.spec, t.plan = S.validate_job(d)
    t.model = _model(t.spec, t.plan, 1)
    towers.append(t)

class JobEpochs:
    def epoch(self, e, metrics):
        pass

signals = Signals()
own = P.pack_callback(towers, JobEpochs(), signals, prefixed=False)
P.fit_in_turn(towers, own, JobEpochs(), signals,
              lambda t, cb: _fit(t.model, t.spec, t.plan, data, yt, yv, [cb]))
for d, t in zip(specs, towers):
    alone, weights = _separate(d, 1)
    assert t.ended == "done" and len(t.history) == 3
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [h[k] for h in t.history] == alone[k], (k, t.index)
    assert all(np.array_equal(a, b) for a, b in zip(weights, t.model.get_weights()))
print("JAX-OK")
"""


def test_on_jax_the_towers_of_a_pack_train_in_turn_exactly():
    """JAX does not pack (one tower's fit after another in the same job): the worker's
    fallback gives each tower a separate training's metrics and weights, bit for bit."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", JAX_CHECK], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "JAX-OK" in proc.stdout, proc.stderr[-3000:]
