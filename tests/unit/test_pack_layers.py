"""Packs of towers beyond the Dense stack: conv2d and recurrent towers (built by
:func:`worker.training.model.build_model`, Sequential or functional) trained as one pack end
with the weights and per-epoch metrics of separate trainings, bit for bit (TensorFlow)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.unit.test_pack import _assert_same, _fit, _model, _prepared, _separate
from worker.sweeps import pack as P

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF packs")


def _digits(layers: list[dict], lr: float = 0.01, standardize: bool = True) -> dict:
    """A 2-epoch digits job (80/20 split, 23 steps of 64 an epoch) with these layers."""
    return {
        "name": "pack-layers", "experiment": "tests",
        "dataset": {"kind": "sklearn", "name": "digits", "standardize": standardize},
        "model": {"layers": layers},
        "compile": {"loss": "sparse_categorical_crossentropy",
                    "optimizer": {"name": "adam", "learning_rate": lr},
                    "metrics": ["accuracy"]},
        "fit": {"epochs": 2, "batch_size": 64, "validation_split": 0.2, "seed": 0},
    }


def _cnn(filters: int, pool: str = "max", dropout: float = 0.0) -> dict:
    return _digits([
        {"type": "reshape", "target_shape": [8, 8, 1]},
        {"type": "conv2d", "filters": filters, "kernel_size": 3, "activation": "relu"},
        {"type": "spatial_dropout2d", "rate": dropout},
        {"type": f"{pool}_pooling2d"},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ])


def _packed_on_own_data(spec_dicts: list[dict], spe: int) -> list[tuple[dict, list]]:
    """The towers packed as the worker packs them: the pack trains on tower 0's data (its
    arrays and dtype); each tower's history and final weights."""
    towers = [_model(*_prepared(d)[:2], spe) for d in spec_dicts]
    spec, plan, data, yt, yv = _prepared(spec_dicts[0])
    bs = plan.batch_size
    pk = P.make_pack(towers, spe, (data.x_train[:bs], yt[:bs]))
    hist = _fit(pk, spec, plan, data, yt, yv)
    out = []
    for i, tower in enumerate(towers):
        per_epoch = [P.tower_logs({k: v[e] for k, v in hist.items()}, i)
                     for e in range(plan.epochs)]
        out.append(({k: [m[k] for m in per_epoch] for k in per_epoch[0]}, tower.get_weights()))
    return out


def test_a_pack_of_conv2d_towers_equals_separate_trainings(spe=23):
    """Each epoch's 23 steps in one compiled call (the recurrent packs below take one step a
    call)."""
    specs = [_cnn(2), _cnn(4, "average"), _cnn(3, dropout=0.3)]
    specs[1]["compile"]["optimizer"]["learning_rate"] = 0.003
    for spec, packed in zip(specs, _packed_on_own_data(specs, spe), strict=True):
        _assert_same(_separate(spec, spe), packed)


def test_a_pack_of_recurrent_towers_equals_separate_trainings():
    """An lstm tower, a bidirectional one, a functional graph with a skip (its lstm with
    dropout) and one reading the digits as token ids through an embedding (int32 x: tower
    0's float x reaches it cast, the values its own training reads), on unscaled digits."""
    rows = {"type": "reshape", "target_shape": [8, 8]}
    head = {"type": "dense", "units": 10, "activation": "softmax"}
    specs = [
        _digits([rows, {"type": "lstm", "units": 4}, head], standardize=False),
        _digits([rows, {"type": "bidirectional", "merge_mode": "sum",
                        "layer": {"type": "lstm", "units": 3, "return_sequences": True}},
                 {"type": "global_average_pooling1d"}, head], standardize=False),
        _digits([{**rows, "name": "rows"},
                 {"type": "lstm", "units": 8, "return_sequences": True, "name": "seq"},
                 {"type": "add", "inputs": ["rows", "seq"]},
                 {"type": "lstm", "units": 4, "dropout": 0.2}, head], standardize=False),
        _digits([{"type": "reshape", "target_shape": [8, 8]},
                 {"type": "embedding", "input_dim": 17, "output_dim": 2},
                 {"type": "reshape", "target_shape": [8, 16]},
                 {"type": "lstm", "units": 4}, head], standardize=False),
    ]
    assert _prepared(specs[-1])[1].input_dtype == "int32"
    assert _prepared(specs[0])[2].x_train.dtype == np.float32
    for spec, packed in zip(specs, _packed_on_own_data(specs, 1), strict=True):
        _assert_same(_separate(spec, 1), packed)


def test_token_ids_first_a_float_tower_beside_them_reads_them_cast():
    """Tower 0 reads token ids (the pack trains on its int32 arrays); a float tower beside it
    gets them cast to float32, its own training's values, bit for bit."""
    head = {"type": "dense", "units": 10, "activation": "softmax"}
    specs = [_digits([{"type": "embedding", "input_dim": 17, "output_dim": 2},
                      {"type": "flatten"}, head], standardize=False),
             _digits([{"type": "dense", "units": 8, "activation": "relu"}, head],
                     standardize=False)]
    assert _prepared(specs[0])[2].x_train.dtype == np.int32
    assert _prepared(specs[1])[2].x_train.dtype == np.float32
    for spec, packed in zip(specs, _packed_on_own_data(specs, 1), strict=True):
        _assert_same(_separate(spec, 1), packed)
