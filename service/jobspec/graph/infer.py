"""A spec's layers as a graph: each layer's output shape, parameters and kept activations."""

from __future__ import annotations

import dataclasses
import math

from service.jobspec.errors import ErrorDetail
from service.jobspec.graph.shapes import ONE_INPUT, LayerShapeError, Shape, merge, show
from service.jobspec.graph.wiring import layer_inputs, layer_names, where, wiring_errors
from service.jobspec.layers import INPUT, MERGE_TYPES

# Layers that hand integer token ids on unchanged (so an embedding after them still reads ids).
KEEPS_DTYPE = ("reshape", "flatten")
# Layers the output's activation is looked for through, walking back from the output.
PASS_THROUGH = ("dropout", "spatial_dropout1d", "spatial_dropout2d")
# Layers whose ``activation`` (and units) a network's output takes.
SETS_OUTPUT = ("dense", "conv1d", "conv2d", "simple_rnn", "lstm", "gru", "bidirectional")


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    index: int
    name: str  # the spec's name, else f"{type}_{index}" (the worker names Keras's layers so)
    type: str
    inputs: tuple[str, ...]  # names of the layers it takes; "input": the model's input
    output_shape: Shape  # per sample
    params: int  # Keras's count_params (trainable and not)
    activations: int  # floats per sample kept for the backward pass


@dataclasses.dataclass(frozen=True)
class GraphInfo:
    layers: tuple[LayerInfo, ...]
    input_shape: Shape
    input_dtype: str  # "int32" when an embedding reads the model's input, else "float32"
    output_shape: Shape
    total_params: int
    sequential: bool  # no layer has a name or inputs: a Sequential stack
    output_index: int  # the last layer, the model's output
    output_units: int  # output_shape's last size
    output_activation: str  # what the output ends with ("linear" when nothing squashes it)
    units_index: int | None  # the dense/conv/recurrent layer that sets output_units, if any
    activation_index: int | None  # the layer that sets output_activation, if any

    def as_dicts(self) -> list[dict]:
        return [{"name": li.name, "type": li.type, "output_shape": list(li.output_shape),
                 "params": li.params} for li in self.layers]


def _dtype_error(i: int, layer, x_dtype: str, x_max: int | None,
                 in_dtype: str) -> ErrorDetail | None:
    if layer.type != "embedding":
        return None
    if in_dtype != "int32":
        return ErrorDetail(f"model.layers.{i}", (
            f"{where(i, layer)}: an embedding reads integer token ids, but its input is "
            f"{in_dtype} (the dataset's x is {x_dtype}); feed it the model's input from a "
            "dataset of integers (such as digits with standardize false), or remove it"),
            in_dtype)
    if x_max is not None and x_max >= layer.input_dim:
        return ErrorDetail(f"model.layers.{i}.input_dim", (
            f"{where(i, layer)}: input_dim {layer.input_dim} covers token ids 0..."
            f"{layer.input_dim - 1}, but the dataset's go up to {x_max}; set input_dim to at "
            f"least {x_max + 1}"), layer.input_dim)
    return None


def _one(i: int, layer, in_shapes: list[Shape], ins: tuple[str, ...]):
    if layer.type in MERGE_TYPES:
        return merge(layer, in_shapes, ins)
    return ONE_INPUT[layer.type](layer, in_shapes[0])


def _work_out(layers: list, order: list[int], inputs: list[tuple[str, ...]], names: list[str],
              input_shape: Shape, x_dtype: str, x_max: int | None):
    """Shapes in graph order; a layer after one that failed is skipped (its error would only
    repeat the first)."""
    out: dict[str, tuple] = {INPUT: (input_shape, 0, 0)}
    dtype = {INPUT: x_dtype}
    errors: list[ErrorDetail] = []
    reads_ids = False
    for i in order:
        layer, ins = layers[i], inputs[i]
        if any(n not in out for n in ins):
            continue
        in_dtype = dtype[ins[0]] if len(ins) == 1 else "float32"
        problem = _dtype_error(i, layer, x_dtype, x_max, in_dtype)
        if problem:
            errors.append(problem)
            continue
        reads_ids |= layer.type == "embedding"
        try:
            out[names[i]] = _one(i, layer, [out[n][0] for n in ins], ins)
        except LayerShapeError as exc:
            shapes = ", ".join(show(out[n][0]) for n in ins)
            errors.append(ErrorDetail(f"model.layers.{i}", f"{where(i, layer)}: {exc}", shapes))
            continue
        dtype[names[i]] = in_dtype if layer.type in KEEPS_DTYPE else "float32"
    return out, errors, reads_ids


def _mixed_dtype(layers, inputs, names, x_dtype) -> list[ErrorDetail]:
    """With an embedding on the input, the input is int32: other layers cannot read it."""
    ids = {INPUT}
    errors = []
    for i, (layer, ins) in enumerate(zip(layers, inputs)):
        if not ids.intersection(ins):
            continue
        if layer.type in KEEPS_DTYPE:
            ids.add(names[i])
        elif layer.type != "embedding":
            errors.append(ErrorDetail(f"model.layers.{i}.inputs", (
                f"{where(i, layer)}: reads the model's integer token ids, which an embedding "
                "reads too; give it the embedding's output (or another float layer's)"),
                list(ins)))
    return errors


def _output_ends(layers: list, inputs: list, names: list[str]) -> tuple[int | None, int | None]:
    """(the layer that sets the output's units, the one that sets its activation), walking back
    from the last layer through activation and dropout layers."""
    index = {n: k for k, n in enumerate(names)}
    i, act_idx = len(layers) - 1, None
    while True:
        layer = layers[i]
        if layer.type == "activation" and act_idx is None:
            act_idx = i
        elif layer.type in SETS_OUTPUT:
            return i, i if act_idx is None else act_idx
        elif layer.type not in PASS_THROUGH and layer.type != "activation":
            return None, act_idx
        src = inputs[i][0]
        if src not in index:
            return None, act_idx
        i = index[src]


def _activation_of(layer) -> str:
    if layer.type == "bidirectional":
        return layer.layer.activation
    return getattr(layer, "activation", "linear")


def infer(layers: list, input_shape: tuple[int, ...], x_dtype: str = "float32",
          x_max: int | None = None) -> tuple[GraphInfo | None, list[ErrorDetail]]:
    """Each layer's output shape, parameters and kept activations, without TensorFlow.

    Args:
        layers: the spec's layers (:mod:`service.jobspec.layers`), in the spec's order.
        input_shape: one sample's shape (no batch axis).
        x_dtype: the dataset's x, "float32" or "int32" (token ids an embedding can read).
        x_max: with integer x, its largest value (an embedding's input_dim must exceed it).

    Returns:
        (the graph, []) or (None, every error, each naming its layer, the shapes, the fix).
    """
    input_shape = tuple(input_shape)
    names = layer_names(layers)
    inputs = layer_inputs(layers, names)
    order, errors = wiring_errors(layers, names, inputs)
    if errors:
        return None, errors
    out, errors, reads_ids = _work_out(layers, order, inputs, names, input_shape, x_dtype,
                                       x_max)
    if reads_ids:
        errors += _mixed_dtype(layers, inputs, names, x_dtype)
    if errors:
        return None, sorted(errors, key=_layer_of)
    infos = tuple(LayerInfo(i, names[i], layer.type, inputs[i], *out[names[i]])
                  for i, layer in enumerate(layers))
    units_idx, act_idx = _output_ends(layers, inputs, names)
    shape = infos[-1].output_shape
    return GraphInfo(
        layers=infos, input_shape=input_shape,
        input_dtype="int32" if reads_ids else "float32", output_shape=shape,
        total_params=sum(li.params for li in infos),
        sequential=not any(layer.name or layer.inputs for layer in layers),
        output_index=len(layers) - 1, output_units=shape[-1] if shape else 0,
        output_activation=_activation_of(layers[act_idx]) if act_idx is not None else "linear",
        units_index=units_idx, activation_index=act_idx,
    ), []


def _layer_of(detail: ErrorDetail) -> int:
    return int(detail.loc.split(".")[2])


def activations_per_sample(graph: GraphInfo) -> int:
    """Floats one sample keeps for the backward pass: the input and every layer's."""
    return math.prod(graph.input_shape) + sum(li.activations for li in graph.layers)
