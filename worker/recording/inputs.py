"""The run's dataset inputs: what it trained and validated on, as MLflow datasets.

The run page's "Datasets" section lists them: one input per split, its context tag
``training`` or ``validation`` (``mlflow.data.context``), its name (``sklearn:digits``,
``synthetic:spiral``, an upload's name), its digest (:func:`split_digest`: the whole set's
digest, the split's rows and whether it was standardized, so the two splits are two datasets
that MLflow does not fold into one, without hashing the arrays again), its source
(what it came from: the loader, the synthetic set's parameters, the upload) and its schema
and profile (the arrays' dtype and shape, from :func:`mlflow.data.from_numpy`).

A job's inputs are built once (:func:`dataset_inputs`) and logged in one ``log_inputs`` call
per run (:func:`log_inputs`): the job's own run and each child run of the trials it carries,
which trained on the same data.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from service import jobspec as S

SKLEARN_LOADER = "sklearn.datasets.load_{}"


def dataset_label(ds, upload: dict | None = None) -> tuple[str, dict]:
    """The dataset's name in MLflow and where it came from.

    Args:
        ds: The job spec's ``dataset`` (synthetic, sklearn or upload).
        upload: For an upload, what the service knows of it (``name``, ``filename``,
            ``sha256``, ...: :func:`service.worker_api.upload_label`); None when unknown.

    Returns:
        tuple[str, dict]: The name (``sklearn:digits``, ``synthetic:spiral``, the upload's
        name) and the source (JSON-able).
    """
    if isinstance(ds, S.SklearnDataset):
        return f"sklearn:{ds.name}", {"loader": SKLEARN_LOADER.format(ds.name),
                                      "standardize": ds.standardize}
    if isinstance(ds, S.SyntheticDataset):
        return f"synthetic:{ds.name}", {"generator": "kerasyard synthetic",
                                        **ds.model_dump(mode="json", exclude={"kind"})}
    upload = upload or {}
    source = {"upload": ds.id, "target": ds.target, "standardize": ds.standardize,
              **{k: v for k, v in upload.items() if k != "name" and v is not None}}
    return upload.get("name") or f"upload:{ds.id}", source


def dataset_inputs(spec, data, upload: dict | None = None) -> list:
    """The :class:`mlflow.entities.DatasetInput` of each split the job has (training, and
    validation when it holds data out).

    Args:
        spec: The validated job spec (its ``dataset`` and ``fit.seed``).
        data: The job's :class:`~worker.training.datasets.Data`, split and standardized as
            trained on (the arrays' dtype and shape are read, not their values).
        upload: See :func:`dataset_label`.
    """
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    name, source = dataset_label(spec.dataset, upload)
    n_val = 0 if data.x_val is None else len(data.x_val)
    splits = [("training", data.x_train, data.y_train, (0, data.n_train))]
    if n_val:
        splits.append(("validation", data.x_val, data.y_val,
                       (data.n_train, data.n_train + n_val)))
    out = []
    for context, x, y, (start, stop) in splits:
        where = {**source, "dataset_digest": data.digest, "shuffle_seed": _shuffle_seed(spec),
                 "rows": f"{start}:{stop} of {data.n_train + n_val}, after the shuffle"}
        digest = split_digest(data.digest, context, start, stop, source.get("standardize"))
        # The schema from two rows (the batch is -1 in it), the profile from the whole split:
        # an upload streamed from disk (rows read on demand) is not read for either.
        ds = mlflow.data.from_numpy(np.asarray(x[:2]), targets=np.asarray(y[:2]), name=name,
                                    digest=digest,
                                    source=CodeDatasetSource({"kerasyard": where})).to_dict()
        ds["profile"] = json.dumps(profile(x, y))
        out.append(DatasetInput(Dataset(**ds), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return out


def profile(x, y) -> dict:
    """MLflow's NumPy dataset profile (shape, size, bytes of features and targets), read
    from the arrays' attributes."""
    out = {}
    for prefix, arr in (("features", x), ("targets", y)):
        shape = [int(n) for n in arr.shape]
        out.update({f"{prefix}_shape": shape, f"{prefix}_size": math.prod(shape),
                    f"{prefix}_nbytes": int(arr.nbytes)})
    return out


def split_digest(data_digest: str, context: str, start: int, stop: int,
                 standardized: bool | None) -> str:
    """A split's digest: the whole set's (``kerasyard.dataset_digest``: its arrays, shuffled),
    which rows of it, and whether they were standardized. O(1): an uploaded set streamed from
    disk is not read again for it."""
    key = f"{data_digest}:{context}:{start}:{stop}:{bool(standardized)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _shuffle_seed(spec) -> int:
    """The seed the rows were shuffled by before the split (:func:`~worker.training.datasets.
    build_dataset`)."""
    ds = spec.dataset
    return ds.seed if isinstance(ds, S.SyntheticDataset) else spec.fit.seed


# What MLflow's server answers when two runs of one experiment log the same new dataset at the
# same moment: its store looks the dataset up, finds none, and both insert it (SQLite's and
# PostgreSQL's words for the unique key that refuses the second).
_INSERT_RACE = ("IntegrityError", "UNIQUE constraint failed", "duplicate key value")
INSERT_RACE_TRIES = 3


def log_inputs(cl, run_id: str, inputs: list | None) -> None:
    """The job's dataset inputs on a run, in one call (nothing when there are none).

    A call refused because another run inserted the same dataset at the same moment is made
    again (up to :data:`INSERT_RACE_TRIES` calls): the dataset exists by then and is linked,
    not inserted. Any other error is raised at once."""
    if not inputs:
        return
    from mlflow.exceptions import MlflowException

    for tries_left in range(INSERT_RACE_TRIES - 1, -1, -1):
        try:
            cl.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            if not tries_left or not any(w in str(exc) for w in _INSERT_RACE):
                raise
