"""Datasets, deterministic by seed: synthetic sets, scikit-learn's bundled sets, uploaded CSVs.

NumPy and scikit-learn only; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np

from service import jobspec as S


@dataclasses.dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    task: str
    class_names: list[str] | None
    digest: str

    @property
    def n_train(self) -> int:
        return len(self.x_train)


def _playground(name: str, n: int, noise: float, rng: np.random.Generator):
    """The TensorFlow Playground's 2-D sets (coordinates in [-6, 6])."""
    if name == "circle":
        radius = 5.0
        r = np.concatenate([rng.uniform(0, radius * 0.5, n // 2),
                            rng.uniform(radius * 0.7, radius, n - n // 2)])
        angle = rng.uniform(0, 2 * np.pi, n)
        x = np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1)
        y = (r > radius * 0.5).astype("int32")
    elif name == "xor":
        x = rng.uniform(-5, 5, (n, 2))
        x += np.sign(x) * 0.3  # keep points off the axes, as the Playground does
        y = (x[:, 0] * x[:, 1] < 0).astype("int32")
    elif name == "gauss":
        half = n // 2
        x = np.concatenate([rng.normal(2, 1, (half, 2)), rng.normal(-2, 1, (n - half, 2))])
        y = np.concatenate([np.zeros(half), np.ones(n - half)]).astype("int32")
    else:  # spiral
        half = n // 2
        parts, labels = [], []
        for label, (count, delta) in enumerate(((half, 0.0), (n - half, np.pi))):
            i = np.arange(count)
            r = i / max(count, 1) * 5
            t = 1.75 * i / max(count, 1) * 2 * np.pi + delta
            parts.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
            labels.append(np.full(count, label))
        x, y = np.concatenate(parts), np.concatenate(labels).astype("int32")
    x = x + rng.normal(0, noise, x.shape) * (5 if name != "gauss" else 1)
    return x.astype("float32"), y


def synthetic(ds: S.SyntheticDataset) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd

    n_features, n_classes = S.synthetic_defaults(ds)
    rng = np.random.default_rng(ds.seed)
    if ds.name in S.PLAYGROUND_SETS:
        return _playground(ds.name, ds.n_samples, ds.noise, rng)
    if ds.name == "classification":
        informative = S.classification_informative(n_features, n_classes)
        x, y = skd.make_classification(
            n_samples=ds.n_samples, n_features=n_features, n_informative=informative,
            n_redundant=min(2, n_features - informative), n_classes=n_classes,
            n_clusters_per_class=1, random_state=ds.seed)
        return x.astype("float32"), y.astype("int32")
    if ds.name == "linear":
        # The lecture's cost-function example: y = x . p + noise.
        p = rng.uniform(-3, 3, n_features)
        x = rng.uniform(-1, 1, (ds.n_samples, n_features))
        y = x @ p + rng.normal(0, ds.noise, ds.n_samples)
        return x.astype("float32"), y.astype("float32")
    x, y = skd.make_regression(n_samples=ds.n_samples, n_features=n_features,
                               noise=ds.noise * 10, random_state=ds.seed)
    return x.astype("float32"), (y / np.std(y)).astype("float32")


def sklearn_set(name: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    from sklearn import datasets as skd

    loader = {"iris": skd.load_iris, "wine": skd.load_wine,
              "breast_cancer": skd.load_breast_cancer, "digits": skd.load_digits,
              "diabetes": skd.load_diabetes}[name]
    bunch = loader()
    names = [str(n) for n in bunch.target_names] if hasattr(bunch, "target_names") else None
    if name == "diabetes":
        return bunch.data.astype("float32"), (bunch.target / 100.0).astype("float32"), None
    return bunch.data.astype("float32"), bunch.target.astype("int32"), names


def digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()[:16]


def npz_dataset(spec: S.JobSpec, plan: S.TrainingPlan, upload,
                cache: str | None = None) -> Data:
    """An uploaded .npz (``upload``: service.worker_api's Upload): held in memory, or streamed
    from a memory map when ``plan.streamed`` (:mod:`.streaming`; ``cache``: the folder,
    KERASYARD_DATA_CACHE_DIR). Shuffled by ``fit.seed`` before the split, as every set is."""
    from worker.training import streaming

    ds, prof = spec.dataset, upload.profile
    args = (upload.content, prof, spec.fit.seed, plan.n_train, plan.task, ds.standardize)
    if getattr(plan, "streamed", False):
        parts = streaming.streamed(*args, streaming.cache_dir(cache))
    else:
        parts = streaming.in_memory(*args)
    x_train, y_train, x_val, y_val, names = parts
    if plan.task == "classification" and names is None:
        names = [str(i) for i in range(plan.n_classes or 2)]
    tag = hashlib.sha256(f"{prof['sha256']}:{spec.fit.seed}".encode()).hexdigest()[:16]
    return Data(x_train, y_train, x_val, y_val, plan.task, names, tag)


def build_dataset(spec: S.JobSpec, plan: S.TrainingPlan, load_upload: Callable | None = None,
                  cache: str | None = None) -> Data:
    """Arrays for one job: shuffled once by seed, split train/validation, standardized.

    ``x`` is int32 when an embedding reads the model's input (token ids: scikit-learn's
    digits unstandardized, an uploaded array of integers), float32 otherwise
    (``plan.input_dtype``).

    The rows are shuffled before the split because scikit-learn's sets are sorted by class:
    Keras's own validation_split takes the last rows, which for iris is all one class.
    ``load_upload``: an upload's id -> its Upload (service.worker_api.uploaded_dataset);
    an .npz is :func:`npz_dataset`'s (``cache``: where it is streamed from).
    """
    ds = spec.dataset
    class_names = None
    standardize = False
    if isinstance(ds, S.SyntheticDataset):
        x, y = synthetic(ds)
        seed = ds.seed
    elif isinstance(ds, S.SklearnDataset):
        x, y, class_names = sklearn_set(ds.name)
        standardize, seed = ds.standardize, spec.fit.seed
    else:
        from service.worker_api import load_arrays

        if load_upload is None:
            raise RuntimeError("uploaded datasets need a loader")
        upload = load_upload(ds.id)
        if upload.format == "npz":
            return npz_dataset(spec, plan, upload, cache)
        x, y, classes = load_arrays(upload.content, ds.target, plan.task)
        class_names = classes
        standardize, seed = ds.standardize, spec.fit.seed
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = plan.n_train
    x_train, y_train = x[:n_train], y[:n_train]
    x_val, y_val = (x[n_train:], y[n_train:]) if plan.n_val else (None, None)
    if standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train = (x_train - mean) / std
        if x_val is not None:
            x_val = (x_val - mean) / std
    if plan.task == "classification" and class_names is None:
        class_names = [str(i) for i in range(plan.n_classes or 2)]
    # Token ids (an embedding reads the input) go in as int32, anything else as float32.
    return Data(x_train.astype(plan.input_dtype), y_train, None if x_val is None else
                x_val.astype(plan.input_dtype), y_val, plan.task, class_names, digest(x, y))


class EpochOrders:
    """Endless: each epoch's order of the ``n`` training rows, a fresh permutation each epoch
    from one generator seeded by ``seed``, or the rows as they are.

    A checkpoint stores where the generator stood before an epoch's order was drawn
    (:meth:`state_before`); built from that ``state`` with ``start`` = that epoch, it draws
    the same orders from there on as the uninterrupted generator does. Whoever reads ahead
    (an input pipeline that prefetches batches of the next epoch) does not move what
    :meth:`state_before` answers for an epoch already drawn.
    """

    KEEP = 64  # epochs drawn whose starting state is kept (prefetching reads a few ahead)

    def __init__(self, n: int, seed: int, shuffle: bool = True, state: dict | None = None,
                 start: int = 0):
        self.n, self.shuffle = n, shuffle
        self.rng = np.random.default_rng(seed)
        if state is not None:
            self.rng.bit_generator.state = state
        self.drawn = start  # the epoch (0-based) whose order comes next
        self._before: dict[int, dict] = {}

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        self._before[self.drawn] = self.rng.bit_generator.state
        self._before.pop(self.drawn - self.KEEP, None)
        self.drawn += 1
        return self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def state_before(self, epoch: int) -> dict:
        """The generator's state before epoch ``epoch``'s (0-based) order was drawn."""
        if epoch == self.drawn:
            return self.rng.bit_generator.state
        return self._before[epoch]


def epoch_orders(n: int, seed: int, shuffle: bool = True) -> EpochOrders:
    """Endless: each epoch's order of the ``n`` training rows, a fresh permutation each epoch
    (``seed``), or the rows as they are (:class:`EpochOrders`)."""
    return EpochOrders(n, seed, shuffle)


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, shuffle: bool = True,
                  orders: EpochOrders | None = None):
    """Endless batches in :func:`epoch_orders`'s order (``Model.fit``'s input on the backends
    where the worker's own loop does not run, see :mod:`worker.training.trainer`); ``orders``:
    that order from a checkpoint's position on (default: from the first epoch).

    Handing Keras one endless generator plus steps_per_epoch keeps one input iterator for the
    whole fit; with arrays, the TensorFlow backend builds a new tf.data iterator every epoch,
    which on the lecture example cost more than the 40 training steps themselves.
    """
    for order in orders if orders is not None else epoch_orders(len(x), seed, shuffle):
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]
