"""A training's state at an epoch boundary, as bytes: what a resumed training needs to end
bit for bit where the uninterrupted one ends.

A :class:`State` is the epochs done, a JSON-able ``meta`` and named NumPy ``arrays``;
:func:`to_bytes` writes it as one ``.npz`` (no pickle: the bytes come back from the database
and are never executed). What goes in, and from where:

- every model's variables (``model.variables``: its weights, BatchNormalization's moving
  statistics, and the state of each layer's ``SeedGenerator``, which decides dropout's masks)
  and its optimizer's (the iteration count, the learning rate, momentum and Adam's slots):
  :func:`model_arrays`, :func:`restore_model`;
- Keras's global ``SeedGenerator`` (unseeded random ops), when one was made:
  :func:`seed_state`;
- the data order's position (:class:`worker.training.datasets.EpochOrders`), early stopping's
  state (:func:`early_stopping_state`), the models saved for the sweep trials a training
  carries (:func:`files_state`), the epochs' metrics and the rest: the trainer's
  (:mod:`worker.jobs.trainers`).

NumPy's and Python's global generators are not stored: nothing draws from them once the
model is built (the data order has its own generator, dropout its layer's).

Backend-neutral: keras and NumPy only.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np

FORMAT = 1  # the layout of the bytes; a checkpoint of another format is not resumed from
META = "__meta__"


class CheckpointMismatch(Exception):
    """The checkpoint does not fit the training it is restored into (its models' variables
    differ in number or shape: another Keras, a changed model); nothing was changed."""


@dataclasses.dataclass
class State:
    """``epoch``: the epochs done (the next to train is ``epoch + 1``); ``meta``: JSON-able;
    ``arrays``: by name."""

    epoch: int
    meta: dict
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def to_bytes(state: State) -> bytes:
    meta = json.dumps({"format": FORMAT, "epoch": state.epoch, **state.meta})
    buf = io.BytesIO()
    np.savez(buf, **{META: np.frombuffer(meta.encode(), dtype=np.uint8)}, **state.arrays)
    return buf.getvalue()


def from_bytes(blob: bytes) -> State:
    """Raises :class:`CheckpointMismatch` for bytes of another format."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop(META).tobytes().decode())
    got = meta.pop("format", None)
    if got != FORMAT:
        raise CheckpointMismatch(f"checkpoint format {got!r}, not {FORMAT}")
    return State(meta.pop("epoch"), meta, arrays)


# --- models ------------------------------------------------------------------------------------


def _optimizer_variables(model) -> list:
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return []
    if not opt.built:  # built lazily at the first step; a restored one is needed before it
        opt.build(model.trainable_variables)
    return list(opt.variables)


def _variables(model) -> list[tuple[str, object]]:
    return [(f"m{i}", v) for i, v in enumerate(model.variables)] + \
        [(f"o{i}", v) for i, v in enumerate(_optimizer_variables(model))]


def model_arrays(model, prefix: str) -> dict[str, np.ndarray]:
    """The model's variables and its optimizer's, named ``<prefix>/m<i>`` and
    ``<prefix>/o<i>`` in their (deterministic) order."""
    import keras

    return {f"{prefix}/{name}": keras.ops.convert_to_numpy(v) for name, v in _variables(model)}


def check_model(model, arrays: dict[str, np.ndarray], prefix: str) -> None:
    """Raises :class:`CheckpointMismatch` unless ``arrays`` holds exactly the model's
    variables under ``prefix``, each of its shape."""
    pattern = re.compile(re.escape(prefix) + r"/[mo]\d+")
    have = {k for k in arrays if pattern.fullmatch(k)}
    variables = _variables(model)
    want = {f"{prefix}/{name}" for name, _ in variables}
    if have != want:
        raise CheckpointMismatch(f"{prefix}: the checkpoint holds {len(have)} variables, the "
                                 f"model and its optimizer {len(want)}")
    for name, v in variables:
        got = arrays[f"{prefix}/{name}"]
        if tuple(got.shape) != tuple(v.shape):
            raise CheckpointMismatch(f"{prefix}: variable {v.path} is {tuple(v.shape)}, the "
                                     f"checkpoint's {tuple(got.shape)}")


def restore_model(model, arrays: dict[str, np.ndarray], prefix: str) -> None:
    """Assign the model's and its optimizer's variables (call :func:`check_model` on every
    model first, so that a mismatch changes nothing)."""
    for name, v in _variables(model):
        v.assign(arrays[f"{prefix}/{name}"])


# --- Keras's global seed generator -----------------------------------------------------------


def _global_seed_generator():
    try:
        from keras.src.backend.common import global_state
        from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    except ImportError:  # another Keras: nothing to store
        return None
    return global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)


def seed_state() -> dict[str, np.ndarray]:
    """The state of Keras's global SeedGenerator (unseeded random ops draw from it), when
    one exists."""
    import keras

    gen = _global_seed_generator()
    return {} if gen is None else {"keras_global_seed": keras.ops.convert_to_numpy(gen.state)}


def restore_seed_state(arrays: dict[str, np.ndarray]) -> None:
    if "keras_global_seed" not in arrays:
        return
    import keras
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

    gen = _global_seed_generator()
    if gen is None:
        gen = keras.random.SeedGenerator()
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, gen)
    gen.state.assign(arrays["keras_global_seed"])


# --- early stopping ----------------------------------------------------------------------------


def early_stopping_state(cb, prefix: str = "es") -> tuple[dict, dict[str, np.ndarray]]:
    """``keras.callbacks.EarlyStopping``'s state: its counters and best value (meta) and the
    best weights it would restore (arrays ``<prefix>/<i>``)."""
    meta = {"wait": int(cb.wait), "stopped_epoch": int(cb.stopped_epoch),
            "best": None if cb.best is None else float(cb.best),
            "best_epoch": int(cb.best_epoch),
            "best_weights": None if cb.best_weights is None else len(cb.best_weights)}
    arrays = {f"{prefix}/{i}": np.asarray(w) for i, w in enumerate(cb.best_weights or [])}
    return meta, arrays


def restore_early_stopping(cb, meta: dict, arrays: dict[str, np.ndarray],
                           prefix: str = "es") -> None:
    """Put the state back (after ``on_train_begin``, which resets it)."""
    cb.wait, cb.stopped_epoch = meta["wait"], meta["stopped_epoch"]
    cb.best, cb.best_epoch = meta["best"], meta["best_epoch"]
    n = meta["best_weights"]
    cb.best_weights = None if n is None else [arrays[f"{prefix}/{i}"] for i in range(n)]


# --- the epochs' metrics -----------------------------------------------------------------------


def history_state(history: list[dict], prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Every epoch's metrics so far as one float64 array (epochs x metric names, exact:
    the metrics are Python floats) and a mask of the values an epoch has; meta: the names."""
    names = list(dict.fromkeys(k for h in history for k in h))
    values = np.array([[h.get(k, np.nan) for k in names] for h in history],
                      dtype=np.float64).reshape(len(history), len(names))
    there = np.array([[k in h for k in names] for h in history],
                     dtype=bool).reshape(len(history), len(names))
    return {"names": names}, {f"{prefix}/values": values, f"{prefix}/there": there}


def restore_history(meta: dict, arrays: dict[str, np.ndarray], prefix: str) -> list[dict]:
    names, values, there = meta["names"], arrays[f"{prefix}/values"], arrays[f"{prefix}/there"]
    return [{k: float(v) for k, v, has in zip(names, row, mask) if has}
            for row, mask in zip(values, there)]


# --- the models saved for the trials a training carries --------------------------------------


def files_state(saved: dict[int, object], prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``saved`` (epoch -> a saved ``.keras`` file, or the model itself when it stays as it
    is): the files' bytes (arrays ``<prefix>/<epoch>``); meta says which epochs are the
    model."""
    meta, arrays = {}, {}
    for epoch, where in saved.items():
        if isinstance(where, Path):
            arrays[f"{prefix}/{epoch}"] = np.frombuffer(where.read_bytes(), dtype=np.uint8)
            meta[str(epoch)] = "file"
        else:
            meta[str(epoch)] = "model"
    return meta, arrays


def restore_files(meta: dict, arrays: dict[str, np.ndarray], prefix: str,
                  paths: dict[int, Path], model) -> dict[int, object]:
    """The ``saved`` mapping again: each file written back to ``paths[epoch]``, ``model``
    where the model itself was saved. An epoch ``paths`` lacks is left out (its trial was
    recorded before the checkpoint's attempt died: nothing records it again)."""
    out: dict[int, object] = {}
    for key, kind in meta.items():
        epoch = int(key)
        if kind == "model":
            out[epoch] = model
        elif epoch in paths:
            paths[epoch].write_bytes(arrays[f"{prefix}/{epoch}"].tobytes())
            out[epoch] = paths[epoch]
    return out
