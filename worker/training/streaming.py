"""Uploaded .npz datasets as training data: held in memory, or streamed from disk.

Both paths give the same rows in the same order, standardized with the same statistics
(:func:`feature_stats`, summed in chunks over the training rows), so a job trains to the same
weights either way:

- **in memory** (:func:`in_memory`): x converted once (int32 token ids or float32), shuffled,
  split, standardized; plain arrays for the worker's own loop.
- **streamed** (:func:`streamed`, when the plan says ``streamed``: holding the data would
  exceed the job's memory budget, see :func:`service.jobspec.memory.streams`): x and y are
  copied once from the upload into ``.npy`` files in a cache folder (keyed by the upload's
  sha256, written to a temporary name and renamed into place) and opened memory-mapped.
  The split and each epoch's order are index vectors; :class:`StreamedRows` gathers, converts
  and standardizes a batch when it is read. :func:`worker.training.trainer.fit` trains such
  data through ``Model.fit`` over :func:`~.datasets.epoch_batches` (the batches the in-memory
  path trains on) and validates it in batches.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from service.jobspec.memory import STREAM_CHUNK_BYTES

CACHE_FOLDER = "kerasyard-data"


class StreamedRows:
    """The rows ``index`` of a memory-mapped ``source``, read as ``dtype`` with the sample shape
    ``shape`` and standardized by ``mean``/``std`` (None: as they are) batch by batch.

    Indexing with a slice or an index array (what :func:`~.datasets.epoch_batches` and the
    artifacts' prediction do) returns an ndarray of those rows; nothing else is held."""

    streamed = True

    def __init__(self, source, index: np.ndarray, dtype: str, shape: tuple[int, ...],
                 mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.source, self.index, self.dtype = source, index, np.dtype(dtype)
        self.sample_shape, self.mean, self.std = tuple(shape), mean, std

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def nbytes(self) -> int:
        """What the rows would take held in memory."""
        return len(self.index) * math.prod(self.sample_shape) * self.dtype.itemsize

    def __getitem__(self, key) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return self[np.asarray([rows])][0]
        out = rows_as(self.source, rows, self.dtype, self.sample_shape)
        return out if self.mean is None else standardized(out, self.mean, self.std)


def rows_as(source, rows: np.ndarray, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``source[rows]`` converted to ``dtype``, each row of ``shape`` (a 1-D x has (1,))."""
    return np.asarray(source[rows]).astype(dtype).reshape((len(rows), *shape))


def standardized(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / std


def feature_stats(source, index: np.ndarray, shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (float32, a zero std made 1) of each position of a sample
    over the rows ``index`` of ``source``, read as float32 in chunks of at most
    :data:`~service.jobspec.memory.STREAM_CHUNK_BYTES` of float64 and merged (Chan et al.'s
    pairwise update), in sorted row order: the same numbers for an array and its memory map."""
    size = math.prod(shape)
    rows = max(1, STREAM_CHUNK_BYTES // (8 * size))
    order = np.sort(index)
    count, mean, m2 = 0, np.zeros(size), np.zeros(size)
    for start in range(0, len(order), rows):
        chunk = rows_as(source, order[start:start + rows], "float32", shape)
        chunk = chunk.reshape(len(chunk), size).astype("float64")
        k, c_mean = len(chunk), chunk.mean(axis=0)
        c_m2 = ((chunk - c_mean) ** 2).sum(axis=0)
        delta, total = c_mean - mean, count + k
        mean = mean + delta * (k / total)
        m2 = m2 + c_m2 + delta ** 2 * (count * k / total)
        count = total
    std = np.sqrt(m2 / max(count, 1)).astype("float32")
    std[std == 0] = 1.0
    return mean.astype("float32").reshape(shape), std.reshape(shape)


def x_dtype(profile: dict) -> str:
    """int32 for integer x (token ids), float32 otherwise."""
    return "int32" if np.dtype(profile["x"]["dtype"]).kind in "iu" else "float32"


def targets(y: np.ndarray, profile: dict, task: str) -> tuple[np.ndarray, list[str] | None]:
    """y as int32 class indices (mapped to 0..k-1 in sorted order when the profile's classes
    are other values) or float32 for a regression; and the class names."""
    if task == "regression":
        return np.asarray(y).astype("float32"), None
    classes = profile["y"]["classes"]
    index = np.searchsorted(np.asarray(classes), np.asarray(y))
    return index.astype("int32"), [str(c) for c in classes]


def cache_dir(configured: str | None) -> Path:
    """KERASYARD_DATA_CACHE_DIR, or a folder in the system's temporary directory."""
    return Path(configured) if configured else Path(tempfile.gettempdir()) / CACHE_FOLDER


def extract(content: bytes, sha256: str, folder: Path) -> tuple[Path, Path]:
    """x.npy and y.npy of an upload in ``folder/<sha256>/``, copied out of the archive once
    (member by member, in chunks: the decompressed arrays are never held), each written to a
    temporary name and renamed into place, so a reader never sees half a file.

    Raises:
        ValueError: the bytes are not the upload the sha256 names.
    """
    if hashlib.sha256(content).hexdigest() != sha256:
        raise ValueError("the upload's bytes do not match its sha256; upload it again")
    out = folder / sha256
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "x.npy", out / "y.npy")
    if all(p.exists() for p in paths):
        return paths
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        for path in paths:
            fd, tmp = tempfile.mkstemp(dir=out, prefix=path.stem, suffix=".part")
            try:
                with zf.open(path.name) as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return paths


def split(n: int, seed: int, n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shuffle (``seed``) and the train/validation index vectors."""
    order = np.random.default_rng(seed).permutation(n)
    return order, order[:n_train], order[n_train:]


def in_memory(content: bytes, profile: dict, seed: int, n_train: int, task: str,
              standardize: bool):
    """The upload's arrays held: ``(x_train, y_train, x_val, y_val, class_names)``; x_val and
    y_val are None without a validation split."""
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
    return _assemble(x, y, profile, seed, n_train, task, standardize, streamed=False)


def streamed(content: bytes, profile: dict, seed: int, n_train: int, task: str,
             standardize: bool, folder: Path):
    """As :func:`in_memory`, x as :class:`StreamedRows` over a memory map."""
    x_path, y_path = extract(content, profile["sha256"], folder)
    x = np.load(x_path, mmap_mode="r", allow_pickle=False)
    y = np.load(y_path, mmap_mode="r", allow_pickle=False)
    return _assemble(x, y, profile, seed, n_train, task, standardize, streamed=True)


def sample_shape(profile: dict) -> tuple[int, ...]:
    """One sample's shape (service.uploads.npz.sample_shape): a 1-D x is one feature."""
    return tuple(profile["x"]["shape"][1:]) or (1,)


def _assemble(x, y, profile, seed, n_train, task, standardize, streamed: bool):
    shape, dtype = sample_shape(profile), x_dtype(profile)
    order, train, val = split(len(y), seed, n_train)
    yy, names = targets(y, profile, task)
    scale = standardize and dtype == "float32"
    if streamed:
        mean, std = feature_stats(x, train, shape) if scale else (None, None)
        x_train = StreamedRows(x, train, dtype, shape, mean, std)
        x_val = StreamedRows(x, val, dtype, shape, mean, std) if len(val) else None
    else:
        x = x.astype(dtype).reshape((len(x), *shape))
        mean, std = feature_stats(x, train, shape) if scale else (None, None)
        x_train, x_val = x[train], x[val] if len(val) else None
        if scale:
            x_train = standardized(x_train, mean, std)
            x_val = None if x_val is None else standardized(x_val, mean, std)
    return x_train, yy[train], x_val, (yy[val] if len(val) else None), names
