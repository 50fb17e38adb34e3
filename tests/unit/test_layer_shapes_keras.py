"""service.jobspec.graph.infer agrees with Keras on random architectures.

A seeded generator writes :data:`N_MODELS` valid architectures (Sequential stacks and graphs
with names, inputs, branches and merges) over every layer type; each is built by the worker's
own :func:`worker.training.model.build_layers`, and every layer's output shape and parameter
count, the model's total and its input dtype must be what ``infer`` worked out without Keras.
The generator tracks shapes itself (to pick sizes that fit), independently of ``infer``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter

import keras
import pytest
from pydantic import TypeAdapter

from service.jobspec.graph import infer
from service.jobspec.layers import LAYER_TYPES, MERGE_TYPES, Layer
from service.jobspec.models import ACTIVATIONS
from worker.training import model as M

N_MODELS = 520
SEED = 19
LAYERS = TypeAdapter(list[Layer])
RECURRENT = ("simple_rnn", "lstm", "gru")


class Arch:
    """One random architecture being written: its layers (spec dicts) and, per layer name,
    the shape it outputs (the generator's own arithmetic)."""

    def __init__(self, rng: random.Random, graph: bool):
        self.rng, self.graph = rng, graph
        self.layers: list[dict] = []
        self.shapes: dict[str, tuple] = {}
        self.head = "input"
        self.int_input = False

    def add(self, layer: dict, shape: tuple, inputs: list[str] | None = None) -> str:
        """Append ``layer`` (output ``shape``) taking ``inputs`` (default: the head); it
        becomes the head. Returns its name (its own, or Keras's ``<type>_<index>``)."""
        i, r = len(self.layers), self.rng
        inputs = inputs or [self.head]
        if self.graph:
            if r.random() < 0.4:
                layer["name"] = f"n{i}"
            default = [self.layers_name(i - 1) if i else "input"]
            if inputs != default or r.random() < 0.3:
                layer["inputs"] = inputs
        self.layers.append(layer)
        self.head = self.layers_name(i)
        self.shapes[self.head] = tuple(shape)
        return self.head

    def layers_name(self, i: int) -> str:
        return self.layers[i].get("name") or f"{self.layers[i]['type']}_{i}"

    @property
    def shape(self) -> tuple:
        return self.shapes[self.head]


def _act(r: random.Random) -> str:
    return r.choice(ACTIVATIONS)


def _window(r: random.Random, n: int, padding: str) -> tuple[int, int]:
    """(size, stride) of a kernel or pool over a spatial size ``n`` (it fits with 'valid')."""
    return (r.randint(1, min(n, 3)) if padding == "valid" else r.randint(1, 4)), r.randint(1, 2)


def _out(n: int, size: int, stride: int, padding: str) -> int:
    return math.ceil(n / stride) if padding == "same" else (n - size) // stride + 1


def _sizes(r: random.Random, values: list[int]):
    """A window field as Keras takes it: one int for all axes, or a list."""
    return values[0] if len(set(values)) == 1 and r.random() < 0.6 else list(values)


def _spatial(r, a: Arch, kind: str, rank: int) -> None:
    """conv1d/conv2d or a pooling layer over the head's ``rank`` spatial axes."""
    shape, padding = a.shape, r.choice(["valid", "same"])
    wins = [_window(r, n, padding) for n in shape[:rank]]
    spatial = tuple(_out(n, k, st, padding) for (k, st), n in zip(wins, shape[:rank]))
    sizes, strides = [w[0] for w in wins], [w[1] for w in wins]
    if kind == "conv":
        filters = r.randint(1, 4)
        a.add({"type": f"conv{rank}d", "filters": filters, "kernel_size": _sizes(r, sizes),
               "strides": _sizes(r, strides), "padding": padding, "activation": _act(r),
               "use_bias": r.random() < 0.8}, (*spatial, filters))
        return
    layer = {"type": f"{kind}_pooling{rank}d", "pool_size": _sizes(r, sizes), "padding": padding}
    if r.random() < 0.5:
        layer["strides"] = _sizes(r, strides)
    else:  # strides default to pool_size
        spatial = tuple(_out(n, s, s, padding) for s, n in zip(sizes, shape[:rank]))
    a.add(layer, (*spatial, shape[-1]))


def _recurrent_layer(r: random.Random) -> dict:
    cell = {"type": r.choice(RECURRENT), "units": r.randint(1, 4), "activation": _act(r),
            "use_bias": r.random() < 0.8, "return_sequences": r.random() < 0.5,
            "dropout": r.choice([0.0, 0.2])}
    if cell["type"] != "simple_rnn" and r.random() < 0.3:
        cell["recurrent_activation"] = _act(r)
    return cell


def _reshape_to(r: random.Random, size: int, rank: int) -> list[int]:
    """A target_shape of ``rank`` axes holding ``size`` values (maybe with one -1)."""
    dims = [size]
    while len(dims) < rank:
        last = dims.pop()
        divisors = [d for d in range(1, last + 1) if last % d == 0]
        d = r.choice(divisors)
        dims += [d, last // d]
    r.shuffle(dims)
    if r.random() < 0.3:
        dims[r.randrange(rank)] = -1
    return dims


def _reshape(r, a: Arch, rank: int) -> None:
    size = math.prod(a.shape)
    target = _reshape_to(r, size, rank)
    known = math.prod(d for d in target if d != -1)
    a.add({"type": "reshape", "target_shape": target},
          tuple(size // known if d == -1 else d for d in target))


def _common(r, a: Arch) -> None:
    """A layer any float input takes, keeping its shape or setting its last axis."""
    shape = a.shape
    kind = r.choice(["dense", "dense", "dropout", "batch_normalization", "layer_normalization",
                     "activation"])
    if kind == "dense":
        units = r.randint(1, 6)
        a.add({"type": "dense", "units": units, "activation": _act(r),
               "use_bias": r.random() < 0.8}, (*shape[:-1], units))
    elif kind == "dropout":
        a.add({"type": "dropout", "rate": r.choice([0.0, 0.1, 0.5])}, shape)
    elif kind == "layer_normalization":
        a.add({"type": kind, "epsilon": r.choice([1e-3, 1e-5])}, shape)
    elif kind == "activation":
        a.add({"type": "activation", "activation": _act(r)}, shape)
    else:
        a.add({"type": kind}, shape)


def _step_flat(r, a: Arch) -> None:
    choice = r.random()
    if choice < 0.25:
        _reshape(r, a, r.choice([2, 3]))
    elif choice < 0.3:
        a.add({"type": "flatten"}, a.shape)
    else:
        _common(r, a)


def _step_seq(r, a: Arch) -> None:
    shape, choice = a.shape, r.random()
    if choice < 0.2:
        _spatial(r, a, "conv", 1)
    elif choice < 0.35:
        _spatial(r, a, r.choice(["max", "average"]), 1)
    elif choice < 0.55:
        cell = _recurrent_layer(r)
        if r.random() < 0.35:
            mode = r.choice(["concat", "sum", "mul", "ave"])
            units = cell["units"] * (2 if mode == "concat" else 1)
            a.add({"type": "bidirectional", "layer": cell, "merge_mode": mode},
                  (shape[0], units) if cell["return_sequences"] else (units,))
        else:
            a.add(cell, (shape[0], cell["units"]) if cell["return_sequences"]
                  else (cell["units"],))
    elif choice < 0.62:
        a.add({"type": f"global_{r.choice(['max', 'average'])}_pooling1d"}, (shape[-1],))
    elif choice < 0.68:
        a.add({"type": "spatial_dropout1d", "rate": 0.2}, shape)
    elif choice < 0.74:
        a.add({"type": "flatten"}, (math.prod(shape),))
    elif choice < 0.8:
        _reshape(r, a, r.choice([1, 3]))
    else:
        _common(r, a)


def _step_img(r, a: Arch) -> None:
    shape, choice = a.shape, r.random()
    if choice < 0.25:
        _spatial(r, a, "conv", 2)
    elif choice < 0.45:
        _spatial(r, a, r.choice(["max", "average"]), 2)
    elif choice < 0.55:
        a.add({"type": f"global_{r.choice(['max', 'average'])}_pooling2d"}, (shape[-1],))
    elif choice < 0.62:
        a.add({"type": "spatial_dropout2d", "rate": 0.3}, shape)
    elif choice < 0.7:
        a.add({"type": "flatten"}, (math.prod(shape),))
    elif choice < 0.76:
        _reshape(r, a, 2)
    else:
        _common(r, a)


STEPS = {1: _step_flat, 2: _step_seq, 3: _step_img}


def _set_width(r, a: Arch, width: int) -> None:
    """A dense layer (or a 'same' conv2d on an image) setting the head's last axis."""
    shape = a.shape
    if len(shape) == 3 and r.random() < 0.5:
        a.add({"type": "conv2d", "filters": width, "kernel_size": r.choice([1, 3]),
               "padding": "same", "activation": _act(r)}, (*shape[:-1], width))
    else:
        a.add({"type": "dense", "units": width, "activation": _act(r)}, (*shape[:-1], width))


def _branch(r, a: Arch, start: str, width: int) -> str:
    """0-2 layers from ``start`` keeping its shape but the last axis, set to ``width``."""
    a.head = start
    for _ in range(r.randint(0, 2)):
        if r.random() < 0.4:
            _set_width(r, a, width)
            continue
        kind = r.choice(["dropout", "activation", "batch_normalization", "layer_normalization"])
        extra = {"dropout": {"rate": 0.1}, "activation": {"activation": _act(r)}}.get(kind, {})
        a.add({"type": kind, **extra}, a.shape)
    if a.shape[-1] != width:
        _set_width(r, a, width)
    return a.head


def _merge(r, a: Arch) -> None:
    """2-3 branches from the head (one maybe a skip from the model's input), merged."""
    start, shape = a.head, a.shape
    kind = r.choice(MERGE_TYPES)
    sources = [start] * r.choice([2, 2, 2, 3])
    if not a.int_input and a.shapes["input"] == shape and r.random() < 0.5:
        sources[0] = "input"  # a skip connection from the model's input
    rank = len(shape)
    axis_i = r.choice([rank - 1, rank - 1, 0]) if kind == "concatenate" else rank - 1
    widths = [r.randint(1, 4) if kind == "concatenate" and axis_i == rank - 1 else shape[-1]
              for _ in sources]
    ends = [_branch(r, a, s, w) for s, w in zip(sources, widths)]
    if kind != "concatenate":
        a.add({"type": kind}, shape, ends)
        return
    out = list(a.shapes[ends[0]])
    out[axis_i] = sum(a.shapes[e][axis_i] for e in ends)
    axis = r.choice([axis_i, axis_i - rank])
    a.add({"type": "concatenate", "axis": axis}, tuple(out), ends)


def architecture(r: random.Random) -> tuple[list[dict], tuple, str, int | None]:
    """(layers, input_shape, x_dtype, x_max) of one random valid architecture."""
    graph = r.random() < 0.45
    a = Arch(r, graph)
    start = r.random()
    x_dtype, x_max = "float32", None
    if start < 0.25:  # token ids: an embedding reads them (through a reshape, sometimes)
        x_dtype, steps, a.int_input = "int32", r.randint(2, 6), True
        x_max = r.randint(2, 20)
        a.shapes["input"] = (steps,)
        if r.random() < 0.3:
            a.add({"type": "reshape", "target_shape": [steps]}, (steps,))
        elif r.random() < 0.2 and steps % 2 == 0:
            a.add({"type": "reshape", "target_shape": [2, steps // 2]}, (2, steps // 2))
        out_dim = r.randint(1, 4)
        a.add({"type": "embedding", "input_dim": x_max + 1 + r.randint(0, 3),
               "output_dim": out_dim}, (*a.shape, out_dim))
    else:
        rank = r.choice([1, 1, 2, 3])
        a.shapes["input"] = tuple(r.randint(2, 7) for _ in range(rank))
    for _ in range(r.randint(1, 6)):
        if graph and r.random() < 0.3:
            _merge(r, a)
        else:
            STEPS[len(a.shape)](r, a)
    if r.random() < 0.5 and len(a.shape) == 1:
        units = r.randint(1, 5)
        a.add({"type": "dense", "units": units, "activation": "softmax"}, (units,))
    return a.layers, a.shapes["input"], x_dtype, x_max


def _check(layers_d: list[dict], input_shape, x_dtype, x_max) -> list[str]:
    """What Keras builds differently from what infer worked out (empty: they agree)."""
    layers = LAYERS.validate_python(layers_d)
    info, errors = infer(layers, input_shape, x_dtype, x_max)
    if errors:
        return [f"infer refused a valid architecture: {[e.message for e in errors]}"]
    try:
        model = M.build_layers(layers, input_shape, info.input_dtype)
    except Exception as exc:  # noqa: BLE001 - reported with the architecture
        return [f"keras cannot build it: {type(exc).__name__}: {str(exc)[:300]}"]
    problems = []
    if model.inputs[0].dtype != x_dtype or info.input_dtype != x_dtype:
        problems.append(f"input dtype: keras {model.inputs[0].dtype}, infer {info.input_dtype},"
                        f" the data {x_dtype}")
    if info.sequential != isinstance(model, keras.Sequential):
        problems.append(f"sequential: infer {info.sequential}, keras {type(model).__name__}")
    for li in info.layers:
        kl = model.get_layer(li.name)
        shape = tuple(kl.output.shape[1:])
        if shape != li.output_shape or kl.count_params() != li.params:
            problems.append(f"layer {li.index} {li.name}: keras {shape} {kl.count_params()} "
                            f"params, infer {li.output_shape} {li.params}")
    if model.count_params() != info.total_params:
        problems.append(f"total: keras {model.count_params()}, infer {info.total_params}")
    return problems


def test_infer_agrees_with_keras_on_random_architectures():
    r = random.Random(SEED)
    covered: Counter = Counter()
    failures = []
    t0 = time.perf_counter()
    for k in range(N_MODELS):
        layers, input_shape, x_dtype, x_max = architecture(r)
        covered.update(layer["type"] for layer in layers)
        covered.update(f"bidirectional/{layer['layer']['type']}" for layer in layers
                       if layer["type"] == "bidirectional")
        covered["graph" if any("name" in la or "inputs" in la for la in layers)
                else "sequential"] += 1
        covered["int input"] += x_dtype == "int32"
        problems = _check(layers, input_shape, x_dtype, x_max)
        if problems:
            failures.append(f"{json.dumps(layers)} on {input_shape} {x_dtype}: {problems}")
        if k % 25 == 24:
            keras.backend.clear_session()
    took = time.perf_counter() - t0
    missing = set(LAYER_TYPES) - set(covered)
    assert not missing, f"the generator never wrote {sorted(missing)}"
    for extra in ("graph", "sequential", "int input", *(f"bidirectional/{t}" for t in RECURRENT)):
        assert covered[extra] >= 10, (extra, covered[extra])
    assert all(covered[t] >= 5 for t in LAYER_TYPES), covered
    assert not failures, f"{len(failures)} of {N_MODELS} disagree:\n" + "\n".join(failures[:10])
    print(f"{N_MODELS} models in {took:.1f}s; {dict(covered)}")


# Architectures infer must refuse, which Keras cannot build either: the comparison above
# would have failed on them, so it can fail.
REFUSED = [
    ([{"type": "reshape", "target_shape": [3, 3, 1]},
      {"type": "conv2d", "filters": 2, "kernel_size": 5}], (9,), "float32"),
    ([{"type": "reshape", "target_shape": [4, 2]},
      {"type": "max_pooling1d", "pool_size": 5}], (8,), "float32"),
    ([{"type": "conv2d", "filters": 2, "kernel_size": 3}], (8,), "float32"),
    ([{"type": "lstm", "units": 2}], (8,), "float32"),
    ([{"type": "reshape", "target_shape": [3, 3]}], (8,), "float32"),
    ([{"type": "dense", "units": 3, "name": "a"},
      {"type": "dense", "units": 4, "name": "b", "inputs": ["input"]},
      {"type": "add", "inputs": ["a", "b"]}], (5,), "float32"),
    ([{"type": "dense", "units": 3, "name": "a"},
      {"type": "reshape", "target_shape": [4, 1], "name": "b", "inputs": ["input"]},
      {"type": "concatenate", "inputs": ["a", "b"]}], (4,), "float32"),
]


@pytest.mark.parametrize("layers_d,input_shape,x_dtype", REFUSED,
                         ids=[f"refused-{i}" for i in range(len(REFUSED))])
def test_infer_refuses_what_keras_cannot_build(layers_d, input_shape, x_dtype):
    layers = LAYERS.validate_python(layers_d)
    info, errors = infer(layers, input_shape, x_dtype)
    assert info is None and errors
    with pytest.raises(Exception):  # noqa: B017 - Keras raises ValueError or TypeError
        M.build_layers(layers, input_shape, x_dtype)
