"""A ``.keras`` model's config (Sequential or Functional, already free of custom objects:
:mod:`.keras_file`) turned into kerasyard's layer specs (:mod:`service.jobspec.layers`), the
shape and dtype of its input (:class:`~service.jobspec.shapes.UploadedModel`).

Each Keras layer becomes the spec of its type (the class name in snake_case), with the Keras
layer's name and, in a Functional model, its ``inputs`` from the config's inbound nodes (the
model's input layer is ``"input"``). The spec's fields are copied from the layer's config; the
options kerasyard's shape checks do not model must have the value it assumes
(:data:`REQUIRED`), or the layer is refused naming the option. The worker trains the uploaded
model itself; these specs are what the door checks it with.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from service.jobspec.layers import INPUT, LAYER_TYPES, NAME_PATTERN, RECURRENT_TYPES, Layer
from service.jobspec.shapes import UploadedModel

MODEL_CLASSES = ("Sequential", "Functional", "Model")
INPUT_DTYPES = {"float32": "float32", "int32": "int32", "int64": "int32"}
_NAME = re.compile(NAME_PATTERN)
_LAYER = TypeAdapter(Layer)
_LAYERS = TypeAdapter(list[Layer])


class ModelError(ValueError):
    """The model is refused; ``details`` hold ``{"loc", "msg"}`` per problem."""

    def __init__(self, details: list[dict]):
        self.details = details
        super().__init__("; ".join(d["msg"] for d in details[:3]))


def class_name(layer_type: str) -> str:
    """Keras's class name of a spec's layer type: ``conv2d`` -> ``Conv2D``, ``simple_rnn`` ->
    ``SimpleRNN``, ``batch_normalization`` -> ``BatchNormalization``."""
    parts = []
    for part in layer_type.split("_"):
        if part in ("lstm", "gru", "rnn"):
            parts.append(part.upper())
        elif part.endswith(("1d", "2d", "3d")):
            parts.append(part[:-2].capitalize() + part[-2:].upper())
        else:
            parts.append(part.capitalize())
    return "".join(parts)


TYPE_OF = {class_name(t): t for t in LAYER_TYPES}  # Keras class name -> spec type

# Options that change no shape and no parameter count (initializers, regularizers and
# constraints are Keras's own: :mod:`.keras_file` refused any other).
IGNORED = frozenset({
    "trainable", "dtype", "seed", "noise_shape", "momentum", "epsilon", "synchronized",
    "renorm_momentum", "recurrent_dropout", "unit_forget_bias", "unroll",
    "zero_output_for_mask", "use_cudnn", "implementation", "lora_alpha",
})
IGNORED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_NORMALIZED_LAST = "kerasyard's checks normalize the last axis (channels last)"
# Options kerasyard's shape checks do not model: the value each must have, and why.
REQUIRED: dict[str, tuple[Any, str]] = {
    "data_format": ("channels_last", "kerasyard's shapes put the channels last"),
    "dilation_rate": (1, "kerasyard's shape checks model undilated convolutions"),
    "groups": (1, "kerasyard counts the parameters of ungrouped convolutions"),
    "return_state": (False, "kerasyard's layers have a single output"),
    "go_backwards": (False, "kerasyard runs a recurrent layer forwards (bidirectional runs "
                            "it both ways)"),
    "stateful": (False, "kerasyard's batches are independent of each other"),
    "mask_zero": (False, "kerasyard's checks do not model masking"),
    "keepdims": (False, "kerasyard's shape checks model global pooling that drops the pooled "
                        "axes"),
    "center": (True, "kerasyard counts a normalization's beta parameters"),
    "scale": (True, "kerasyard counts a normalization's gamma parameters"),
    "rms_scaling": (False, "kerasyard counts plain layer normalization's parameters"),
    "renorm": (False, "kerasyard counts plain batch normalization's parameters"),
    "renorm_clipping": (None, "kerasyard counts plain batch normalization's parameters"),
    "reset_after": (True, "kerasyard counts a GRU's parameters as Keras's default has them"),
    "quantization_config": (None, "kerasyard trains float weights"),
    "lora_rank": (None, "kerasyard counts a layer's own weights, without LoRA"),
    "sparse": (False, "kerasyard's data is dense"),
    "ragged": (False, "kerasyard's data is dense"),
    "optional": (False, "kerasyard's model takes its one input"),
}


def _is(value: Any, want: Any) -> bool:
    """``value`` is ``want`` (a list of them counts: Keras stores ``dilation_rate`` as one
    entry per axis); a boolean is not a number here."""
    if isinstance(value, list):
        return bool(value) and all(_is(v, want) for v in value)
    return type(value) is type(want) and value == want


def _fields(layer_type: str) -> set[str]:
    return set(LAYER_TYPES[layer_type].model_fields) - {"type", "name", "inputs"}


def _option_problem(layer_type: str, key: str, value: Any, backward: bool) -> str | None:
    """Why a layer option kerasyard does not copy into the spec is refused (None: it is not)."""
    if key in IGNORED and not (key == "dtype" and isinstance(value, dict)
                               and value.get("class_name") != "DTypePolicy"):
        return None
    if key == "dtype":
        return (f"the dtype policy {value.get('class_name')!r} (quantized weights) is not "
                "supported; kerasyard trains float weights: save the model unquantized")
    if key.endswith(IGNORED_SUFFIXES) or (key == "go_backwards" and backward):
        return None
    if key == "axis" and layer_type in ("batch_normalization", "layer_normalization"):
        want, why = -1, _NORMALIZED_LAST
    elif key in REQUIRED:
        want, why = REQUIRED[key]
    else:
        return (f"option {key}={str(value)[:60]} is not one kerasyard knows for this layer, "
                "so its checks cannot account for it; save the layer without it")
    if _is(value, want):
        return None
    return (f"{key}={str(value)[:60]} is not supported: {why}; save the layer with "
            f"{key}={want!r}")


def _spec_of(entry: Any, loc: str, errors: list[dict], backward: bool = False) -> dict | None:
    """The spec of one layer (without ``name`` and ``inputs``); problems go to ``errors``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        errors.append({"loc": loc, "msg": "not a layer's config (an object with a config)"})
        return None
    cls, cfg = entry.get("class_name"), entry["config"]
    label = f"layer {str(cfg.get('name'))[:64]!r} ({str(cls)[:64]})"
    layer_type = TYPE_OF.get(cls) if isinstance(cls, str) else None
    if cls in MODEL_CLASSES:
        errors.append({"loc": loc, "msg": f"{label} is a model inside the model; kerasyard "
                       "reads one Sequential or Functional model of layers: build it as one "
                       "model (call the inner model's layers directly)"})
        return None
    if layer_type is None:
        known = ", ".join(sorted(TYPE_OF))
        errors.append({"loc": f"{loc}.class_name", "msg": f"{label} is not one of the Keras "
                       f"layers kerasyard can check; it trains models of {known}"})
        return None
    spec: dict = {"type": layer_type}
    fields = _fields(layer_type)
    for key, value in cfg.items():
        if key == "name" or (layer_type == "bidirectional" and key == "backward_layer"):
            continue
        if key in fields:
            spec[key] = value
            continue
        problem = _option_problem(layer_type, key, value, backward)
        if problem:
            errors.append({"loc": f"{loc}.config.{key}", "msg": f"{label}: {problem}"})
    if layer_type == "bidirectional":
        spec["layer"] = _bidirectional(cfg, loc, label, errors)
    if layer_type == "concatenate" and spec.get("axis") == 0:
        errors.append({"loc": f"{loc}.config.axis", "msg": f"{label}: axis=0 joins along the "
                       "batch axis; kerasyard joins the axes of a sample: use axis=-1"})
    return spec


def _bidirectional(cfg: dict, loc: str, label: str, errors: list[dict]) -> dict | None:
    """The recurrent layer a Bidirectional runs both ways; its backward layer must be the
    same layer run backwards (Keras's default)."""
    at = f"{loc}.config.layer"
    forward = _spec_of(cfg.get("layer"), at, errors)
    if forward is None:
        return None
    if forward["type"] not in RECURRENT_TYPES:
        errors.append({"loc": at, "msg": f"{label} wraps a {forward['type']} layer; it takes "
                       f"a recurrent layer ({', '.join(RECURRENT_TYPES)})"})
        return None
    if cfg.get("backward_layer") is not None:
        backward = _spec_of(cfg["backward_layer"], f"{loc}.config.backward_layer", errors,
                            backward=True)
        if backward is not None and backward != forward:
            errors.append({"loc": f"{loc}.config.backward_layer", "msg": f"{label}: its "
                           "backward layer differs from its forward layer; kerasyard runs "
                           "the same layer both ways: leave backward_layer out"})
    return forward


def _validated(spec: dict, loc: str, label: str, errors: list[dict]) -> Any:
    """The spec as the pydantic Layer; its field errors named by the Keras layer."""
    try:
        return _LAYER.validate_python(spec)
    except ValidationError as exc:
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"][1:]) or "(layer)"
            got = str(e.get("input"))[:60]
            errors.append({"loc": f"{loc}.config.{field}", "msg": f"{label}: {field} "
                           f"{e['msg'][0].lower()}{e['msg'][1:]} (got {got})"})
        return None


def _input_of(entry: Any, loc: str) -> tuple[tuple[int, ...], str]:
    """The shape of one sample and the dtype of an InputLayer, or ModelError."""
    cfg = entry.get("config") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or entry.get("class_name") != "InputLayer" or \
            not isinstance(cfg, dict):
        raise ModelError([{"loc": loc, "msg": "the model's input is not a keras.Input; "
                           "start the model with keras.Input(shape=...)"}])
    errors: list[dict] = []
    for key, value in cfg.items():
        if key in REQUIRED and not _is(value, REQUIRED[key][0]):
            errors.append({"loc": f"{loc}.config.{key}", "msg": f"the input's {key}={value} "
                           f"is not supported: {REQUIRED[key][1]}"})
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    return _checked_shape(shape, f"{loc}.config.batch_shape", errors), \
        _dtype(cfg.get("dtype"), f"{loc}.config.dtype", errors, raise_now=True)


def _checked_shape(shape: Any, loc: str, errors: list[dict]) -> tuple[int, ...]:
    ok = isinstance(shape, list) and len(shape) >= 2 and shape[0] is None and all(
        type(d) is int and d > 0 for d in shape[1:])
    if not ok:
        errors.append({"loc": loc, "msg": f"the input's shape {str(shape)[:80]} is not a batch "
                       "of samples of one fixed shape; build the model from "
                       "keras.Input(shape=(n, ...)) with every dimension given"})
    if errors:
        raise ModelError(errors)
    return tuple(shape[1:])


def _dtype(dtype: Any, loc: str, errors: list[dict], raise_now: bool = False) -> str:
    if isinstance(dtype, dict):  # a DTypePolicy
        dtype = (dtype.get("config") or {}).get("name")
    if dtype not in INPUT_DTYPES:
        errors.append({"loc": loc, "msg": f"the input's dtype {str(dtype)[:40]!r} is not "
                       "float32 (features) or int32 (token ids for an embedding)"})
    if errors and raise_now:
        raise ModelError(errors)
    return INPUT_DTYPES.get(dtype, "float32")


def _name_or_none(name: Any) -> str | None:
    return name if isinstance(name, str) and _NAME.match(name) and name != INPUT else None


# --- models -------------------------------------------------------------------------------------


def _sequential(cfg: dict, loc: str) -> UploadedModel:
    """A Sequential model: its layers in order, each named (when its Keras name is one a spec
    takes) and without ``inputs``: each takes the layer before it."""
    entries = cfg.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ModelError([{"loc": f"{loc}.layers", "msg": "the model has no layers"}])
    if isinstance(entries[0], dict) and entries[0].get("class_name") == "InputLayer":
        shape, dtype = _input_of(entries[0], f"{loc}.layers.0")
        first = 1
    elif cfg.get("build_input_shape") is not None:
        errors: list[dict] = []
        shape = _checked_shape(cfg["build_input_shape"], f"{loc}.build_input_shape", errors)
        dtype, first = "float32", 0
    else:
        raise ModelError([{"loc": f"{loc}.layers", "msg": "the model was saved before it was "
                           "built, so its input's shape is unknown; begin it with "
                           "keras.Input(shape=...)"}])
    errors = []
    layers = []
    for i in range(first, len(entries)):
        at = f"{loc}.layers.{i}"
        spec = _spec_of(entries[i], at, errors)
        if spec is None:
            continue
        raw_name = entries[i]["config"].get("name")
        name = _name_or_none(raw_name)
        label = f"layer {str(raw_name)[:64]!r} ({entries[i]['class_name']})"
        layers.append(_validated({**spec, **({"name": name} if name else {})}, at, label,
                                 errors))
    if errors:
        raise ModelError(errors)
    return UploadedModel(layers=layers, input_shape=shape, input_dtype=dtype)


def _one_end(value: Any, loc: str, what: str) -> str:
    """The layer name of a Functional model's one input or output (``[name, 0, 0]`` or a list
    of one of them)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return value[0]
    raise ModelError([{"loc": loc, "msg": f"the model has several {what}s (or none); kerasyard "
                       f"trains models of one input and one output"}])


def _source(tensor: Any) -> str | None:
    """The name of the layer a ``__keras_tensor__`` comes from (its first call, first output)."""
    if not (isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__"):
        return None
    history = (tensor.get("config") or {}).get("keras_history")
    if isinstance(history, list) and len(history) == 3 and isinstance(history[0], str) \
            and history[1:] == [0, 0]:
        return history[0]
    return None


def _inputs(entry: dict, loc: str, label: str, errors: list[dict]) -> list[str] | None:
    """The names of the layers a Functional model's layer takes, from its one inbound node."""
    nodes = entry.get("inbound_nodes")
    if not isinstance(nodes, list) or len(nodes) != 1 or not isinstance(nodes[0], dict):
        n = len(nodes) if isinstance(nodes, list) else 0
        errors.append({"loc": f"{loc}.inbound_nodes", "msg": f"{label} is called {n} times; "
                       "kerasyard's layers are each called once (no shared layers)"})
        return None
    args, kwargs = nodes[0].get("args"), nodes[0].get("kwargs") or {}
    for key, value in (kwargs.items() if isinstance(kwargs, dict) else [("kwargs", kwargs)]):
        if value is not None and not (key == "training" and value is False):
            errors.append({"loc": f"{loc}.inbound_nodes.0.kwargs.{key}", "msg": f"{label} is "
                           f"called with {key}=...; kerasyard calls a layer on its inputs "
                           "only"})
    if not isinstance(args, list) or len(args) != 1:
        errors.append({"loc": f"{loc}.inbound_nodes.0.args", "msg": f"{label} is called with "
                       "several arguments; kerasyard calls a layer on its inputs only"})
        return None
    tensors = args[0] if isinstance(args[0], list) else [args[0]]
    sources = [_source(t) for t in tensors]
    if not sources or None in sources:
        errors.append({"loc": f"{loc}.inbound_nodes.0.args", "msg": f"{label} takes something "
                       "other than the outputs of the model's layers"})
        return None
    return sources


def _functional(cfg: dict, loc: str) -> UploadedModel:
    """A Functional model: each layer with its Keras name and its ``inputs`` (the model's input
    layer is ``"input"``); the output layer last."""
    entries = cfg.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ModelError([{"loc": f"{loc}.layers", "msg": "the model has no layers"}])
    input_name = _one_end(cfg.get("input_layers"), f"{loc}.input_layers", "input")
    output_name = _one_end(cfg.get("output_layers"), f"{loc}.output_layers", "output")
    by_name = {e.get("name"): i for i, e in enumerate(entries) if isinstance(e, dict)}
    if input_name not in by_name or output_name not in by_name:
        raise ModelError([{"loc": f"{loc}.layers", "msg": "the model's input or output layer "
                           "is not among its layers; save the model again"}])
    shape, dtype = _input_of(entries[by_name[input_name]], f"{loc}.layers.{by_name[input_name]}")
    errors: list[dict] = []
    layers = []
    order = [i for i in range(len(entries)) if i != by_name[input_name]]
    order = [i for i in order if i != by_name[output_name]] + [by_name[output_name]]
    for i in order:
        entry, at = entries[i], f"{loc}.layers.{i}"
        spec = _spec_of(entry, at, errors)
        if spec is None:
            continue
        label = f"layer {str(entry['config'].get('name'))[:64]!r} ({entry['class_name']})"
        inputs = _inputs(entry, at, label, errors)
        if inputs is None:
            continue
        spec.update(name=entry.get("name"),
                    inputs=[INPUT if n == input_name else n for n in inputs])
        layers.append(_validated(spec, at, label, errors))
    if errors:
        raise ModelError(errors)
    return UploadedModel(layers=layers, input_shape=shape, input_dtype=dtype)


def convert_model(config: dict) -> UploadedModel:
    """A model's config.json (free of custom objects) as kerasyard's layer specs.

    Args:
        config: the parsed config.json: ``{"class_name": "Sequential" | "Functional",
            "config": {...}}``.

    Returns:
        UploadedModel: the layers as a spec's ``model.layers`` would hold them (pydantic
        :data:`~service.jobspec.layers.Layer` objects), the shape and dtype of one sample.

    Raises:
        ModelError: a layer, option or structure kerasyard cannot check; each detail names
            its path in config.json.
    """
    cls, cfg = config.get("class_name"), config.get("config")
    if cls not in ("Sequential", "Functional") or not isinstance(cfg, dict):
        raise ModelError([{"loc": "class_name", "msg": f"the model is a {str(cls)[:60]!r}; "
                           "kerasyard reads Sequential and Functional models of Keras's "
                           "built-in layers (a subclassed keras.Model is Python code)"}])
    return _sequential(cfg, "config") if cls == "Sequential" else _functional(cfg, "config")


def layers_from_json(layers: list[dict]) -> list:
    """Stored layer specs (:attr:`KerasFile.layers_json`) as pydantic Layer objects again."""
    return _LAYERS.validate_python(layers)
