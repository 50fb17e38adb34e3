"""An uploaded ``.keras`` model, read without TensorFlow: the archive opened with care, its
``config.json`` walked for anything that is not one of Keras's own objects, and the model turned
into kerasyard's layer specs (:mod:`service.jobspec.layers`) for the door's checks.

Pure Python (zipfile and json): the API reads an upload without importing Keras, and nothing in
an upload can make it run code. The worker checks the file again (:func:`read_keras_file`)
before Keras loads it in safe mode.

What is refused, and why:

- an archive that is not a zip, is truncated or damaged, encrypted, holds other members than
  ``config.json``, ``metadata.json`` and ``model.weights.h5``, or unpacks to more than the
  upload cap (a zip bomb);
- a ``Lambda`` layer, or any ``function`` / ``__lambda__`` entry: Python code;
- any custom object (a class registered with ``register_keras_serializable``, a custom
  activation, initializer, regularizer, constraint, loss): its code is not in the file, and
  kerasyard trains only Keras's built-in layers;
- a layer outside kerasyard's catalogue, a model nested in the model, and the layer options
  kerasyard's shape checks do not model (:mod:`.keras_layers`).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from typing import Any

from service.jobspec.graph import infer
from service.jobspec.shapes import UploadedModel
from service.uploads.keras_layers import ModelError, convert_model, layers_from_json

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
MEMBERS = (CONFIG, METADATA, WEIGHTS)
MAX_CONFIG_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_ENTRIES = 16  # the central directory's entries, read before zipfile parses them
MAX_DEPTH = 64  # nesting of config.json (a model of built-in layers needs about 12)
H5_MAGIC = b"\x89HDF\r\n\x1a\n"
_EOCD = b"PK\x05\x06"

__all__ = ["KerasFileError", "KerasFile", "read_keras_file", "layers_from_json",
           "MAX_CONFIG_BYTES"]


class KerasFileError(ValueError):
    """The upload is refused. ``details``: ``{"loc", "msg"}`` per problem; ``loc`` is
    ``file`` or a member of the archive, or a dotted path into ``config.json``."""

    def __init__(self, details: list[dict]):
        self.details = details
        more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
        super().__init__(f"{details[0]['loc']}: {details[0]['msg']}{more}")


def _refuse(loc: str, msg: str) -> KerasFileError:
    return KerasFileError([{"loc": loc, "msg": msg}])


class KerasFile:
    """What :func:`read_keras_file` read: the model as kerasyard checks it
    (:attr:`model`, an :class:`~service.jobspec.shapes.UploadedModel`), its layer specs as
    JSON (:attr:`layers_json`, what is stored), its parameters as the door's graph counts them
    (:attr:`n_params`) and the Keras version that saved it."""

    def __init__(self, model: UploadedModel, n_params: int, keras_version: str | None):
        self.model = model
        self.n_params = n_params
        self.keras_version = keras_version
        self.layers_json = [layer.model_dump(mode="json", exclude_none=True)
                            for layer in model.layers]


# --- the archive --------------------------------------------------------------------------------


def _entry_count(content: bytes) -> int | None:
    """The number of entries the zip's end record declares (None: no end record; 0xFFFF:
    a zip64 archive), read before :mod:`zipfile` builds an object for each of them."""
    at = content.rfind(_EOCD, max(0, len(content) - 22 - 65535))
    if at < 0 or at + 22 > len(content):
        return None
    return struct.unpack("<H", content[at + 10:at + 12])[0]


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """A member's bytes, refusing it once it unpacks to more than ``cap`` (whatever its header
    declares); zipfile checks the CRC at the end."""
    chunks, total = [], 0
    with zf.open(info) as f:
        while chunk := f.read(65536):
            total += len(chunk)
            if total > cap:
                raise _refuse(info.filename, f"unpacks to more than {cap} bytes; kerasyard "
                              f"accepts at most {cap}")
            chunks.append(chunk)
    return b"".join(chunks)


def _members(zf: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    for name in names:
        if names.count(name) > 1:
            raise _refuse(name, "the archive holds this member twice; save the model again "
                          "with model.save('model.keras')")
        if name not in MEMBERS:
            raise _refuse(name, f"unexpected member {name[:80]!r}: a .keras file of Keras's "
                          f"built-in layers holds only {', '.join(MEMBERS)}")
    for required in (CONFIG, WEIGHTS):
        if required not in names:
            raise _refuse("file", f"the archive has no {required}: not a model saved with "
                          "model.save('model.keras') (Keras 3)")
    for info in infos:
        if info.flag_bits & 0x1:
            raise _refuse(info.filename, "the member is encrypted; save the model again "
                          "without a password")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(info.filename, "the member is compressed with a method other than "
                          "deflate; save the model again with model.save")
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise _refuse("file", f"the archive unpacks to {declared} bytes; the limit is "
                      f"{max_bytes} (KERASYARD_MAX_UPLOAD_BYTES)")
    return {i.filename: i for i in infos}


def _open(content: bytes, max_bytes: int) -> tuple[bytes, bytes | None]:
    """config.json's and metadata.json's bytes, after every check of the archive (the weights
    unpacked and counted, not kept)."""
    count = _entry_count(content)
    if count is None or not zipfile.is_zipfile(io.BytesIO(content)):
        raise _refuse("file", "not a .keras file: it is not a zip archive, or it is truncated; "
                      "save the model with model.save('model.keras') and upload that file")
    if count > MAX_ENTRIES:
        raise _refuse("file", f"the archive declares {count} members; a .keras file holds 3")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            infos = _members(zf, max_bytes)
            config = _read_capped(zf, infos[CONFIG], MAX_CONFIG_BYTES)
            metadata = (_read_capped(zf, infos[METADATA], MAX_METADATA_BYTES)
                        if METADATA in infos else None)
            weights_head = _read_capped(zf, infos[WEIGHTS], max_bytes)[:len(H5_MAGIC)]
    except KerasFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise _refuse("file", f"the archive is damaged or truncated ({str(exc)[:120]}); save "
                      "the model again with model.save('model.keras')") from None
    if weights_head != H5_MAGIC:
        raise _refuse(WEIGHTS, "not an HDF5 file: the weights of a .keras file are saved by "
                      "Keras in HDF5")
    return config, metadata


# --- config.json --------------------------------------------------------------------------------


def _depth_ok(value: Any) -> bool:
    """Whether ``value`` nests at most :data:`MAX_DEPTH` levels (iteratively: no recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _json(raw: bytes, member: str) -> Any:
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise _refuse(member, f"nested more than {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(member, f"not valid JSON ({str(exc)[:120]}); save the model again "
                      "with model.save('model.keras')") from None
    if not _depth_ok(value):
        raise _refuse(member, f"nested more than {MAX_DEPTH} levels deep")
    return value


def _keras_version(metadata: bytes | None) -> str | None:
    if metadata is None:
        return None
    meta = _json(metadata, METADATA)
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    return version[:32] if isinstance(version, str) and "\x00" not in version else None


# --- code and custom objects --------------------------------------------------------------------

LAMBDA_FIX = ("runs arbitrary Python code; kerasyard trains only Keras's built-in layers: "
              "replace it with a built-in layer")
_DATA_CLASSES = ("__keras_tensor__",)  # a reference to a layer's output, not an object


def _is_keras_module(module: Any) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def _object_problem(node: dict) -> str | None:
    """Why a serialized object (a dict with ``class_name``) is not one of Keras's own."""
    cls = node.get("class_name")
    if cls == "Lambda":
        name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
        return f"the Lambda layer {str(name)[:64]!r} {LAMBDA_FIX}"
    if cls == "__lambda__":
        return f"a Python lambda: it {LAMBDA_FIX}"
    if isinstance(cls, str) and cls.startswith("__"):
        return None if cls in _DATA_CLASSES else f"{cls!r} is not a value kerasyard reads"
    if "module" not in node and "registered_name" not in node:
        return None  # not a serialized object (e.g. a layer's config with a class_name field)
    module, registered = node.get("module"), node.get("registered_name")
    shown = str(cls)[:80]
    if cls == "function" or registered == "function":
        return (f"the function {str(node.get('config'))[:80]!r} (module {module!r}) is Python "
                "code: use a built-in by its name (e.g. activation='relu')")
    if registered not in (None, cls) or not _is_keras_module(module):
        return (f"the custom object {shown!r} (module {module!r}, registered as "
                f"{registered!r}) is not one of Keras's own: its code is not in the file, and "
                "kerasyard trains only Keras's built-in layers, activations, initializers, "
                "regularizers and constraints")
    return None


def custom_objects(config: Any, path: str = "") -> list[dict]:
    """Every Python function, lambda and custom object anywhere in ``config``, by its path.

    Args:
        config: config.json, parsed (its depth checked).
        path: the dotted path of ``config`` (for the details).

    Returns:
        list[dict]: one ``{"loc", "msg"}`` per problem; empty when every object is Keras's own.
    """
    problems: list[dict] = []
    stack = [(config, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                why = _object_problem(node)
                if why:
                    problems.append({"loc": at or "(config)", "msg": why})
                    continue
            for key, value in node.items():
                here = f"{at}.{key}" if at else str(key)
                if key == "function":
                    problems.append({"loc": here, "msg": f"a function entry: it {LAMBDA_FIX}"})
                    continue
                stack.append((value, here))
        elif isinstance(node, list):
            stack.extend((v, f"{at}.{i}" if at else str(i)) for i, v in enumerate(node))
    return sorted(problems, key=lambda p: p["loc"])


# --- the whole check ----------------------------------------------------------------------------


def read_keras_file(content: bytes, max_bytes: int) -> KerasFile:
    """Check an uploaded ``.keras`` file and read its model, without TensorFlow.

    Args:
        content (bytes): The file's bytes.
        max_bytes (int): The most it may unpack to (KERASYARD_MAX_UPLOAD_BYTES).

    Returns:
        KerasFile: the model as kerasyard's layer specs, its input's shape and dtype, its
        parameters as the door's graph counts them.

    Raises:
        KerasFileError: the file is refused; its details say where and why, and the fix.
    """
    config_raw, metadata = _open(content, max_bytes)
    config = _json(config_raw, CONFIG)
    if not isinstance(config, dict):
        raise _refuse(CONFIG, "not a model's config (a JSON object); save the model with "
                      "model.save('model.keras')")
    problems = custom_objects(config)
    if problems:
        raise KerasFileError(problems[:20])
    try:
        model = convert_model(config)
    except ModelError as exc:
        raise KerasFileError(exc.details[:20]) from None
    graph, errors = infer(model.layers, model.input_shape, model.input_dtype)
    if graph is None:  # Keras built it, so this is a case kerasyard's arithmetic does not cover
        raise KerasFileError([{"loc": e.loc, "msg": f"kerasyard's checks cannot work the "
                               f"model out: {e.msg}"} for e in errors[:20]])
    return KerasFile(model, graph.total_params, _keras_version(metadata))
