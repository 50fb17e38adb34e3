"""The worker's one door into the service: everything a worker process may call.

A worker (``worker/``) imports from the service only this module, ``service`` (for
``__version__``), :mod:`service.config` and :mod:`service.jobspec` (the job spec is the
data both sides share); an import-linter contract in pyproject.toml holds it to that, and
``tests/unit/test_worker_door.py`` keeps the contract's list whole. The worker opens no
database session of its own: every read and write of the service's tables is a function
here, and every change of a job's state goes through :mod:`service.lifecycle`.

Groups:

- **Names**: the states the worker reads and writes (:class:`JobStatus`,
  :class:`SweepStatus`), what a fenced write answers (:class:`Ownership`: :data:`OWNED`,
  :data:`CANCEL`, :data:`PAUSE`, :data:`SUPERSEDED`), the claim's types (:class:`Claim`,
  :class:`Skip`, :class:`Fence`, :class:`StaleRun`), :class:`JobEnd`, the :class:`Sender`
  protocol the worker's own sender meets, and the row types a sweep's report reads (:class:`Job`,
  :class:`Sweep`, detached and read-only).
- **The claim**: :func:`claim`.
- **Fenced writes** of the worker that holds a claim (each answers SUPERSEDED and writes
  nothing once another attempt owns the job): :func:`heartbeat`, :func:`record_epochs`,
  :func:`set_run`, :func:`finish`, :func:`finished_by`, :func:`still_owned`; an attempt
  that stopped at an epoch boundary on purpose (a pause, the worker's shutdown):
  :func:`stop` and :func:`stopped_as`, then :func:`mark_dispatched` once the worker has sent
  a job that went back to the queue; the trials
  recorded from a training: :func:`finish_recorded`, :func:`recorded_progress`,
  :func:`end_unrecorded` (:func:`trial_context` starts them running).
- **Checkpoints** (fenced too): :func:`save_checkpoint` stores the training's state as the
  job's newest checkpoint; an attempt whose claim says ``resumed_from_epoch`` reads it with
  :func:`load_checkpoint` (:class:`StoredCheckpoint`), or :func:`start_over` when it does not
  fit.
- **Ends the worker records for a process it lost**: :func:`fail_out_of_memory` (the
  kernel killed a training child), :func:`job_ends` (what the MLflow reconciler reads).
- **Sweeps**: :func:`trial_context` (:class:`TrialContext`, :class:`SharedTrial`),
  :func:`parent_run` (:class:`SweepParent`: plain data the worker builds the MLflow parent
  run from) and :func:`adopt_parent_run`, :func:`pruner`, :func:`advance_sweep` (the
  ``worker.advance_sweep`` task's work), :func:`report_data` (:class:`ReportData`,
  :class:`Trial`, :func:`job_objective`) and :func:`save_report`.
- **Data**: :func:`validate` (a job spec, the same checks as at submission),
  :func:`uploaded_dataset` (an upload's bytes, format and profile, an
  :class:`Upload`) and :func:`load_arrays` (an uploaded CSV as arrays),
  :func:`uploaded_model` (an uploaded ``.keras`` file's name and bytes) and
  :func:`check_keras_file` (the upload's checks, :class:`KerasFileError` when refused: the
  worker checks the file again before Keras loads it).
- **The worker's presence** in the ``workers`` table (/health): :func:`publish_worker`,
  :func:`withdraw_worker`, every :data:`WORKER_HEARTBEAT_S`.
- **Processes**: :func:`dispose_connections` in a forked child; :func:`use_pool` chooses
  the connections a process keeps by its role.
- **What MLflow names an upload by**: :func:`upload_label` (the run's dataset inputs).

MLflow's terms (run statuses, tag names) are the worker's, not here. Functions that touch
the database raise its error (``sqlalchemy.exc.OperationalError`` and the like) when it does
not answer; the worker retries what must not be lost (``worker/recording/dbretry.py``).
"""

from __future__ import annotations

from typing import Any

from service import validation as _validation
from service.config import Settings
from service.jobspec import JobSpec, TrainingPlan
from service.lifecycle import (
    CANCEL,
    OWNED,
    PAUSE,
    SUPERSEDED,
    Claim,
    Fence,
    JobEnd,
    Ownership,
    Sender,
    Skip,
    StaleRun,
    StoredCheckpoint,
    claim,
    end_unrecorded,
    fail_out_of_memory,
    finish,
    finish_recorded,
    finished_by,
    heartbeat,
    job_ends,
    load_checkpoint,
    mark_dispatched,
    record_epochs,
    recorded_progress,
    save_checkpoint,
    set_run,
    start_over,
    still_owned,
    stop,
    stopped_as,
)
from service.store.db import dispose_engines, set_pool
from service.store.models import Job, JobStatus, Sweep, SweepStatus
from service.sweeps.hooks import (
    ReportData,
    SharedTrial,
    SweepParent,
    TrialContext,
    adopt_parent_run,
    parent_run,
    pruner,
    report_data,
    save_report,
    trial_context,
)
from service.sweeps.hooks import advance as advance_sweep
from service.sweeps.studies import dispose_storages
from service.sweeps.trials import Trial, TrialJob, job_objective
from service.uploads.datasets import Upload, load_arrays
from service.uploads.datasets import upload_content as uploaded_dataset
from service.uploads.keras_file import KerasFileError
from service.uploads.keras_file import read_keras_file as check_keras_file
from service.uploads.models import model_content as uploaded_model
from service.workers import HEARTBEAT_S as WORKER_HEARTBEAT_S
from service.workers import publish as publish_worker
from service.workers import withdraw as withdraw_worker

__all__ = [
    # names
    "JobStatus", "SweepStatus", "Ownership", "OWNED", "CANCEL", "PAUSE", "SUPERSEDED", "Claim",
    "Skip",
    "Fence", "StaleRun", "JobEnd", "Sender", "Job", "Sweep",
    # the claim and the fenced writes
    "claim", "heartbeat", "record_epochs", "set_run", "finish", "finished_by", "still_owned",
    "stop", "stopped_as", "mark_dispatched",
    "finish_recorded", "recorded_progress", "end_unrecorded",
    "fail_out_of_memory", "job_ends",
    # checkpoints
    "StoredCheckpoint", "save_checkpoint", "load_checkpoint", "start_over",
    # sweeps
    "TrialContext", "SharedTrial", "SweepParent", "ReportData", "Trial", "TrialJob",
    "trial_context", "parent_run", "adopt_parent_run", "pruner", "advance_sweep",
    "report_data", "save_report", "job_objective",
    # data
    "validate", "uploaded_dataset", "load_arrays", "Upload", "uploaded_model",
    "check_keras_file", "KerasFileError",
    # presence and processes
    "WORKER_HEARTBEAT_S", "publish_worker", "withdraw_worker", "dispose_connections",
    "use_pool",
    # the run's dataset inputs
    "upload_label",
]


def validate(settings: Settings, data: Any) -> tuple[JobSpec, TrainingPlan]:
    """Check a job spec as at submission, the settings' caps included, and plan it.

    A worker validates again what it is about to train: the caps may have changed since
    submission, and an uploaded dataset may be gone.

    Args:
        settings (Settings): The caps, and the database an uploaded dataset is looked up in.
        data (Any): The spec as stored (a dict).

    Returns:
        tuple[JobSpec, TrainingPlan]: The parsed spec and its plan.

    Raises:
        service.jobspec.SpecError: The spec is invalid; its details name each field, the
            value and the fix.
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    return _validation.validate(settings, data)


def dispose_connections() -> None:
    """Drop the database connections (the service's engines and Optuna's storages) a forked
    worker child inherited from its parent: they must not be shared across fork.

    Called from Celery's ``worker_process_init``; the child opens its own on first use.
    """
    dispose_engines()
    dispose_storages()


def use_pool(role: str) -> None:
    """Choose the database connections this process keeps (``service.store.db.POOLS``):
    "training" in a training process, "per-write" in the Celery parent; drops those made so
    far (the service's engines and Optuna's storages).

    Args:
        role (str): A key of ``service.store.db.POOLS``.

    Raises:
        ValueError: ``role`` is not a known pool; the message names them.
    """
    set_pool(role)
    dispose_storages()


def upload_label(settings: Settings, dataset_id: str) -> dict | None:
    """What an upload is known by, without its bytes: the run's dataset inputs name it so.

    Args:
        settings (Settings): The database.
        dataset_id (str): The dataset (``dataset.id`` of an upload spec).

    Returns:
        dict | None: ``name``, ``filename``, ``sha256``, ``n_rows`` and ``size_bytes``; None
        when the dataset no longer exists.

    Raises:
        sqlalchemy.exc.OperationalError: The database did not answer.
    """
    from sqlalchemy import select

    from service.store.db import session_scope
    from service.store.models import Dataset

    fields = ("name", "filename", "sha256", "n_rows", "size_bytes")
    with session_scope(settings.database_url) as s:
        row = s.execute(select(*(getattr(Dataset, f) for f in fields))
                        .where(Dataset.id == dataset_id)).first()
        return None if row is None else dict(zip(fields, row))
