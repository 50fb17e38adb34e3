"""Uploaded NumPy datasets (``.npz`` with arrays ``x`` and ``y``): checked and profiled
without unpickling anything and without decompressing more than the cap allows.

An ``.npz`` is a zip of ``.npy`` files. Before a byte of an array is read, each member's
declared size (the zip's ``file_size``) and its header's ``shape x itemsize`` are checked
against :func:`max_array_bytes` (a zip bomb declares a small file that inflates to gigabytes:
it is refused on what it declares, and a member is never read past what it declares). The
headers are parsed with NumPy's own reader (a Python literal, never a pickle); an object array
(``dtype=object``, the one kind ``np.load`` would unpickle) is refused by its header. The data
is then read in chunks of :data:`CHUNK_BYTES`: the API process never holds a whole array.

NumPy only (no TensorFlow): the API image has NumPy.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from typing import Any

import numpy as np

from service.jobspec import DatasetInfo, ErrorDetail, SpecError
from service.jobspec.models import MAX_RANK

MAGIC = b"PK\x03\x04"
CONTENT_TYPE = "application/x-npz"
ARRAYS = ("x", "y")
# The arrays, decompressed, may take at most this many times KERASYARD_MAX_UPLOAD_BYTES.
EXPANSION = 8
CHUNK_BYTES = 4 * 1024 * 1024
# Most classes of an integer y (as of a CSV target: service.uploads.datasets.MAX_CLASSES).
MAX_CLASSES = 50
# Distinct y values remembered (CSV's profile does the same): more makes n_unique None.
MAX_UNIQUE = 1000
INT32_MAX = 2 ** 31 - 1
# Zip compression methods np.savez and np.savez_compressed write.
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
SAVE_HINT = "save it with np.savez('data.npz', x=x, y=y) (or np.savez_compressed)"


class NpzError(ValueError):
    """An upload that is not a usable .npz; ``loc`` names the part (``x``, ``y``, ``file``)."""

    def __init__(self, message: str, loc: str = "file", value: Any = None):
        super().__init__(message)
        self.loc = loc
        self.value = value


def is_npz(content: bytes, filename: str | None = None, content_type: str | None = None) -> bool:
    """Whether an upload is meant as an .npz: its content type, its file name's suffix, or the
    zip magic ``PK\\x03\\x04`` (a CSV never starts with it)."""
    return (content_type or "").lower() == CONTENT_TYPE or \
        (filename or "").lower().endswith(".npz") or content.startswith(MAGIC)


def max_array_bytes(max_upload_bytes: int) -> int:
    """The most bytes the arrays of one upload may take decompressed."""
    return EXPANSION * max_upload_bytes


def _members(zf: zipfile.ZipFile, limit: int) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise NpzError(f"the archive names a member twice ({names[:10]}); {SAVE_HINT}")
    arrays = {n[:-4] if n.endswith(".npy") else n: i for n, i in zip(names, infos)}
    missing = [a for a in ARRAYS if a not in arrays]
    extra = sorted(set(arrays) - set(ARRAYS))
    if missing or extra:
        parts = ([f"array {', '.join(map(repr, missing))} missing"] if missing else []) + \
                ([f"extra {', '.join(map(repr, extra[:10]))}"] if extra else [])
        raise NpzError(f"the .npz must hold exactly the arrays 'x' (the samples) and 'y' (the "
                       f"targets): {'; '.join(parts)}; {SAVE_HINT}",
                       "file", sorted(arrays)[:10])
    total = 0
    for name in ARRAYS:
        info = arrays[name]
        if info.flag_bits & 0x1:
            raise NpzError(f"array {name!r} is encrypted; {SAVE_HINT}", name)
        if info.compress_type not in METHODS:
            raise NpzError(f"array {name!r} uses zip compression method {info.compress_type}; "
                           f"only stored or deflated members are read: {SAVE_HINT}", name)
        total += info.file_size
        if info.file_size > limit or total > limit:
            raise NpzError(f"array {name!r} declares {info.file_size:,} bytes uncompressed "
                           f"({total:,} so far); the arrays may take at most {limit:,} bytes "
                           f"({EXPANSION} x KERASYARD_MAX_UPLOAD_BYTES): send fewer samples",
                           name, info.file_size)
    return {a: arrays[a] for a in ARRAYS}


def _header(f, name: str, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order of one member, from its .npy header (no pickle)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not read here")
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
        raise NpzError(f"array {name!r} is not a valid .npy member ({str(exc)[:200]}); "
                       f"{SAVE_HINT}", name) from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "iuf":
        what = "object (pickled Python objects)" if dtype.hasobject else str(dtype)
        fix = ("convert x to float32 (features) or int32 (token ids)" if name == "x" else
               "convert y to int32 (class ids) or float32 (regression targets)")
        raise NpzError(f"array {name!r} has dtype {what}; only integer or float arrays are "
                       f"accepted (no bool, complex, string, object or structured): {fix}",
                       name, str(dtype))
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise NpzError(f"array {name!r}'s header declares {nbytes:,} bytes of data but the "
                       f"member holds {info.file_size:,}; {SAVE_HINT}", name)
    return tuple(int(d) for d in shape), dtype, bool(fortran)


def _check_shapes(shapes: dict[str, tuple[int, ...]]) -> None:
    x, y = shapes["x"], shapes["y"]
    if not 1 <= len(x) <= MAX_RANK + 1:
        raise NpzError(f"x has shape {list(x)} (rank {len(x)}); it must be (samples, ...) "
                       f"with at most {MAX_RANK} axes per sample, rank 1 to {MAX_RANK + 1}",
                       "x", list(x))
    if any(d < 1 for d in x[1:]):
        raise NpzError(f"x has shape {list(x)}; every axis of a sample needs a length of at "
                       "least 1", "x", list(x))
    if len(y) != 1:
        raise NpzError(f"y has shape {list(y)}; it must be 1-D, one target per sample "
                       "(class ids or numbers): use y.reshape(-1) when it holds one value "
                       "per sample", "y", list(y))
    if y[0] != x[0]:
        raise NpzError(f"x has {x[0]} samples but y has {y[0]}; give one target per sample",
                       "y", y[0])
    if x[0] < 2:
        raise NpzError(f"x has {x[0]} samples; a dataset needs at least 2", "x", x[0])


class _Stats:
    """What one pass over an array's chunks finds: range, non-finite values, distinct values."""

    def __init__(self, track_unique: bool):
        self.lo = self.hi = None
        self.bad = 0
        self.first_bad: int | None = None
        self.unique: set | None = set() if track_unique else None

    def add(self, chunk: np.ndarray, offset: int) -> None:
        if chunk.dtype.kind == "f":
            finite = np.isfinite(chunk)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                self.bad += len(bad)
                self.first_bad = int(bad[0]) + offset if self.first_bad is None \
                    else self.first_bad
                chunk = chunk[finite]
        if chunk.size:
            lo, hi = chunk.min().item(), chunk.max().item()
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        if self.unique is not None:
            self.unique.update(np.unique(chunk).tolist())
            if len(self.unique) > MAX_UNIQUE:
                self.unique = None


def _scan(f, name: str, shape, dtype: np.dtype, fortran: bool, info) -> _Stats:
    """Read one array's data in chunks, never more than its header declares."""
    count = math.prod(shape)
    stats = _Stats(track_unique=(name == "y"))
    per_chunk = max(1, CHUNK_BYTES // dtype.itemsize)
    done = 0
    while done < count:
        n = min(per_chunk, count - done)
        try:
            buf = f.read(n * dtype.itemsize)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise NpzError(f"array {name!r} could not be read ({str(exc)[:200]}); "
                           f"{SAVE_HINT}", name) from None
        if len(buf) != n * dtype.itemsize:
            raise NpzError(f"array {name!r} ends after {done + len(buf) // dtype.itemsize:,} of "
                           f"its {count:,} values; {SAVE_HINT}", name)
        stats.add(np.frombuffer(buf, dtype=dtype), done)
        done += n
    if stats.bad:
        flat = stats.first_bad
        where = np.unravel_index(flat, shape, order="F" if fortran else "C")
        raise NpzError(f"array {name!r} has {stats.bad:,} non-finite values (NaN or infinity), "
                       f"the first at index {[int(i) for i in where]}; replace or drop them "
                       f"(e.g. np.nan_to_num, or keep the rows where np.isfinite(...).all())",
                       name, stats.bad)
    return stats


FLOAT32_MAX = float(np.finfo("float32").max)


def _float32_range(name: str, dtype: np.dtype, st: _Stats) -> None:
    """Float arrays are trained as float32: a larger magnitude would become infinity."""
    if dtype.kind == "f" and st.lo is not None and max(-st.lo, st.hi) > FLOAT32_MAX:
        worst = st.lo if -st.lo > st.hi else st.hi
        raise NpzError(f"array {name!r} has the value {worst:g}, beyond float32's range "
                       f"(±{FLOAT32_MAX:.4g}), and is trained as float32; rescale it (e.g. "
                       "divide by its largest magnitude)", name, worst)


def _x_profile(shape, dtype: np.dtype, st: _Stats) -> dict:
    _float32_range("x", dtype, st)
    if dtype.kind in "iu" and (st.lo < 0 or st.hi > INT32_MAX):
        raise NpzError(f"x is integer ({dtype}) with values from {st.lo} to {st.hi}; integer x "
                       f"is read as token ids, 0 to {INT32_MAX}: store numeric features as "
                       "float32 (x.astype('float32'))", "x", st.lo if st.lo < 0 else st.hi)
    return {"shape": list(shape), "dtype": str(dtype), "min": st.lo, "max": st.hi}


def _y_profile(dtype: np.dtype, st: _Stats) -> dict:
    _float32_range("y", dtype, st)
    unique = None if st.unique is None else sorted(st.unique)
    out = {"dtype": str(dtype), "n_unique": None if unique is None else len(unique),
           "min": st.lo, "max": st.hi}
    if dtype.kind in "iu" and unique is not None and len(unique) <= MAX_CLASSES:
        # Class ids: 0..k-1 are used as they are; other values are mapped to 0..k-1 in
        # sorted order (as a CSV's classes are), and the profile says so.
        out["classes"] = unique
        out["mapped"] = unique != list(range(len(unique)))
    return out


def profile(content: bytes, max_upload_bytes: int) -> dict[str, Any]:
    """Check an .npz upload and describe it.

    Args:
        content (bytes): The upload.
        max_upload_bytes (int): KERASYARD_MAX_UPLOAD_BYTES; the arrays may take
            :func:`max_array_bytes` of it decompressed.

    Returns:
        dict: ``{"format": "npz", "x": {"shape", "dtype", "min", "max"}, "y": {"dtype",
        "n_unique", "min", "max"[, "classes", "mapped"]}, "sha256"}``.

    Raises:
        NpzError: naming the array (``loc``), what is wrong, and the fix.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise NpzError(f"the file is not a valid .npz (zip) archive ({str(exc)[:200]}); "
                       f"{SAVE_HINT}") from None
    with zf:
        members = _members(zf, max_array_bytes(max_upload_bytes))
        heads, stats = {}, {}
        for name in ARRAYS:
            with _open(zf, members[name], name) as f:
                heads[name] = _header(f, name, members[name])
        _check_shapes({n: h[0] for n, h in heads.items()})
        for name in ARRAYS:
            with _open(zf, members[name], name) as f:
                _header(f, name, members[name])
                stats[name] = _scan(f, name, *heads[name], members[name])
    return {"format": "npz", "x": _x_profile(heads["x"][0], heads["x"][1], stats["x"]),
            "y": _y_profile(heads["y"][1], stats["y"]),
            "sha256": hashlib.sha256(content).hexdigest()}


def _open(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
    try:
        return zf.open(info)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise NpzError(f"array {name!r} cannot be opened ({str(exc)[:200]}); {SAVE_HINT}",
                       name) from None


def sample_shape(prof: dict) -> tuple[int, ...]:
    """One sample's shape: x's shape less its first axis; a 1-D x is one feature, (1,)."""
    return tuple(prof["x"]["shape"][1:]) or (1,)


def npz_info(prof: dict, task: str | None) -> DatasetInfo:
    """The DatasetInfo of an uploaded .npz for the spec's ``dataset.task`` (None: inferred:
    integer y is classification, float y regression).

    Raises:
        SpecError: naming ``dataset.task`` when y cannot serve that task.
    """
    x, y = prof["x"], prof["y"]
    integer_y = y["dtype"].lstrip("<>=|")[0] in "iu"
    kind = task or ("classification" if integer_y else "regression")
    shape = sample_shape(prof)
    integer_x = x["dtype"].lstrip("<>=|")[0] in "iu"
    common = {"input_shape": shape, "x_dtype": "int32" if integer_x else "float32",
              "x_max": int(x["max"]) if integer_x else None, "streamable": True}
    n = x["shape"][0]
    if kind == "regression":
        return DatasetInfo(n, math.prod(shape), "regression", **common)
    if not integer_y:
        raise SpecError([ErrorDetail("dataset.task", f"y is {y['dtype']}, so it holds numbers, "
                                     "not class ids; store y as integers (y.astype('int32')) "
                                     "to classify, or leave task out for a regression", task)])
    if "classes" not in y:
        many = y["n_unique"] if y["n_unique"] is not None else f"more than {MAX_UNIQUE}"
        raise SpecError([ErrorDetail("dataset.task", f"y has {many} distinct values; a "
                                     f"classifier takes at most {MAX_CLASSES}: use task "
                                     "'regression'", task)])
    if len(y["classes"]) < 2:
        raise SpecError([ErrorDetail("dataset.id", f"y has the single value {y['classes']}; "
                                     "a classifier needs at least 2 classes", None)])
    return DatasetInfo(n, math.prod(shape), "classification", len(y["classes"]), **common)
