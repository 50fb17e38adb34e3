"""One layer's output shape, parameters and kept activations, by Keras 3's arithmetic
(channels_last, shapes per sample, no batch axis).

Each function takes the layer and its input shapes and returns ``(shape, params, activations)``
or raises :class:`LayerShapeError` with what does not fit and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Shape = tuple[int, ...]
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
# Layers whose output keeps their input's shape (and which have no weights of their own).
SAME_SHAPE = ("dropout", "activation")


class LayerShapeError(ValueError):
    """A layer cannot take its input; the message says why and the fix."""


def show(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _grid(sizes: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in sizes)


def _expand(value, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else (value,) * rank


def _at_most(sizes: tuple[int, ...]) -> str:
    return str(sizes[0]) if len(set(sizes)) == 1 else str(list(sizes))


def _reshape_hint(shape: Shape, rank: int) -> str:
    """A target_shape that gives ``shape`` ``rank`` + 1 axes (the last the channels)."""
    if len(shape) == rank:
        return str([*shape, 1])
    if len(shape) > rank:
        return str([*shape[:rank], -1])
    size = math.prod(shape)  # a flat input to a 2-D layer
    side = math.isqrt(size)
    if side * side == size:
        return f"[{side}, {side}, 1]"
    return f"[height, width, 1] where height × width = {size}"


def _need_rank(layer, shape: Shape, rank: int, what: str, fix: str) -> None:
    if len(shape) != rank:
        raise LayerShapeError(f"takes {what} per sample, got the {len(shape)}-D input "
                              f"{show(shape)}; {fix}")


def _windows(layer, shape: Shape, rank: int, field: str, size, strides) -> Shape:
    """The spatial sizes after sliding a window (a kernel or a pool) over ``shape``."""
    spatial = shape[:rank]
    size, strides = _expand(size, rank), _expand(strides, rank)
    if layer.padding == "same":
        return tuple(math.ceil(n / s) for n, s in zip(spatial, strides))
    if any(k > n for k, n in zip(size, spatial)):
        kind = "kernel" if field == "kernel_size" else "pool"
        raise LayerShapeError(
            f"a {_grid(size)} {kind} with padding 'valid' does not fit its {_grid(spatial)} "
            f"input; use padding 'same' or {field} at most {_at_most(spatial)}")
    return tuple(math.ceil((n - k + 1) / s) for n, k, s in zip(spatial, size, strides))


def _conv(layer, shape: Shape, rank: int):
    what = "(steps, channels)" if rank == 1 else "(height, width, channels)"
    _need_rank(layer, shape, rank + 1, what, "add a reshape layer before it with target_shape "
               f"{_reshape_hint(shape, rank)}")
    out = (*_windows(layer, shape, rank, "kernel_size", layer.kernel_size, layer.strides),
           layer.filters)
    kernel = math.prod(_expand(layer.kernel_size, rank))
    params = kernel * shape[-1] * layer.filters + (layer.filters if layer.use_bias else 0)
    return out, params, math.prod(out)


def _pool(layer, shape: Shape, rank: int):
    what = "(steps, channels)" if rank == 1 else "(height, width, channels)"
    _need_rank(layer, shape, rank + 1, what, "add a reshape layer before it with target_shape "
               f"{_reshape_hint(shape, rank)}")
    strides = layer.strides if layer.strides is not None else layer.pool_size
    out = (*_windows(layer, shape, rank, "pool_size", layer.pool_size, strides), shape[-1])
    return out, 0, math.prod(out)


def _global_pool(layer, shape: Shape, rank: int):
    what = "(steps, channels)" if rank == 1 else "(height, width, channels)"
    _need_rank(layer, shape, rank + 1, what, "it averages or takes the max over the "
               f"{'steps' if rank == 1 else 'height and width'}; use flatten for other inputs")
    return (shape[-1],), 0, shape[-1]


def _spatial_dropout(layer, shape: Shape, rank: int):
    what = "(steps, channels)" if rank == 1 else "(height, width, channels)"
    _need_rank(layer, shape, rank + 1, what, "use dropout for other inputs")
    return shape, 0, math.prod(shape)


def _dense(layer, shape: Shape):
    out = (*shape[:-1], layer.units)
    params = shape[-1] * layer.units + (layer.units if layer.use_bias else 0)
    return out, params, math.prod(out)


def _norm(layer, shape: Shape):
    per_channel = 4 if layer.type == "batch_normalization" else 2  # BN: + moving mean, variance
    return shape, per_channel * shape[-1], math.prod(shape)


def _flatten(layer, shape: Shape):
    return (math.prod(shape),), 0, math.prod(shape)


def _reshape(layer, shape: Shape):
    target, size = list(layer.target_shape), math.prod(shape)
    if target.count(-1) > 1 or any(d == 0 or d < -1 for d in target):
        raise LayerShapeError(f"target_shape {target} must be positive sizes with at most one "
                              f"-1 (worked out); its input {show(shape)} holds {size} values")
    known = math.prod(d for d in target if d != -1)
    if -1 in target and size % known == 0:
        target[target.index(-1)] = size // known
    elif -1 in target or known != size:
        held = f"a multiple of {known}" if -1 in target else str(known)
        raise LayerShapeError(f"target_shape {layer.target_shape} holds {held} values but its "
                              f"input {show(shape)} holds {size}; use sizes that multiply to "
                              f"{size} (e.g. [{size}] or one -1)")
    return tuple(target), 0, size


def _embedding(layer, shape: Shape):
    out = (*shape, layer.output_dim)
    return out, layer.input_dim * layer.output_dim, math.prod(out)


def recurrent_params(cell, features: int) -> int:
    """Keras 3's count for a simple_rnn, lstm or gru cell (gru: reset_after, two biases)."""
    gates, u = GATES[cell.type], cell.units
    bias = (2 * gates * u if cell.type == "gru" else gates * u) if cell.use_bias else 0
    return gates * u * (features + u) + bias


def _recurrent_shape(layer, shape: Shape) -> None:
    if len(shape) == 2:
        return
    if len(shape) == 1:
        fix = (f"add a reshape layer before it with target_shape [{shape[0]}, 1] "
               "(or an embedding for token ids)")
    else:
        fix = f"add a reshape layer before it with target_shape [{shape[0]}, -1]"
    raise LayerShapeError(f"takes (timesteps, features) per sample, got the {len(shape)}-D "
                          f"input {show(shape)}; {fix}")


def _recurrent(layer, shape: Shape):
    _recurrent_shape(layer, shape)
    steps, u = shape[0], layer.units
    out = (steps, u) if layer.return_sequences else (u,)
    kept = math.prod(out) + steps * GATES[layer.type] * u
    return out, recurrent_params(layer, shape[1]), kept


def _bidirectional(layer, shape: Shape):
    _recurrent_shape(layer, shape)
    cell, steps = layer.layer, shape[0]
    units = cell.units * (2 if layer.merge_mode == "concat" else 1)
    out = (steps, units) if cell.return_sequences else (units,)
    kept = math.prod(out) + 2 * steps * GATES[cell.type] * cell.units
    return out, 2 * recurrent_params(cell, shape[1]), kept


ONE_INPUT: dict[str, Callable] = {
    "dense": _dense, "batch_normalization": _norm, "layer_normalization": _norm,
    "flatten": _flatten, "reshape": _reshape, "embedding": _embedding,
    "dropout": lambda layer, s: (s, 0, math.prod(s)),
    "activation": lambda layer, s: (s, 0, math.prod(s)),
    "conv1d": lambda layer, s: _conv(layer, s, 1), "conv2d": lambda layer, s: _conv(layer, s, 2),
    "simple_rnn": _recurrent, "lstm": _recurrent, "gru": _recurrent,
    "bidirectional": _bidirectional,
    "spatial_dropout1d": lambda layer, s: _spatial_dropout(layer, s, 1),
    "spatial_dropout2d": lambda layer, s: _spatial_dropout(layer, s, 2),
    **{f"{kind}_pooling{r}d": (lambda r: lambda layer, s: _pool(layer, s, r))(r)
       for kind in ("max", "average") for r in (1, 2)},
    **{f"global_{kind}_pooling{r}d": (lambda r: lambda layer, s: _global_pool(layer, s, r))(r)
       for kind in ("max", "average") for r in (1, 2)},
}


def merge(layer, shapes: list[Shape], names: tuple[str, ...]):
    """add, multiply, average (equal shapes) and concatenate (equal but along its axis)."""
    shown = ", ".join(f"{n!r} {show(s)}" for n, s in zip(names, shapes))
    first = shapes[0]
    if layer.type != "concatenate":
        if any(s != first for s in shapes):
            raise LayerShapeError(f"{layer.type} needs inputs of one shape, got {shown}; "
                                  "make them meet (a dense layer sets the last size)")
        return first, 0, math.prod(first)
    rank, axis = len(first), layer.axis
    if any(len(s) != rank for s in shapes) or not -rank <= axis < rank:
        raise LayerShapeError(f"concatenate (axis {axis}) needs inputs of one rank with that "
                              f"axis, got {shown}; reshape or flatten them first")
    axis %= rank
    cut = [s[:axis] + s[axis + 1:] for s in shapes]
    if any(c != cut[0] for c in cut):
        raise LayerShapeError(f"concatenate (axis {layer.axis}) needs inputs equal in every "
                              f"size but that axis, got {shown}; make the other sizes meet")
    out = (*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1:])
    return out, 0, math.prod(out)
