"""Typed SQLAlchemy 2.0 models: the database is the source of truth for job state."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    pruned = "pruned"
    # Stopped at an epoch boundary at the user's request (POST /jobs/{id}/pause); not
    # terminal: POST /jobs/{id}/resume queues it again, and no worker trains it until then.
    paused = "paused"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled,
                      JobStatus.pruned})


def _status_type(enum_cls: type[enum.Enum]) -> Enum:
    """A status column holds the enum's value in a VARCHAR(16) (no database enum type, so a
    new status needs no migration); Python code reads and compares enum members."""
    return Enum(enum_cls, native_enum=False, create_constraint=False, length=16,
                values_callable=lambda members: [m.value for m in members],
                validate_strings=True)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    experiment: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[JobStatus] = mapped_column(_status_type(JobStatus), default=JobStatus.queued,
                                              index=True)
    queue: Mapped[str] = mapped_column(String(32), default="cpu")
    spec: Mapped[dict] = mapped_column(JSONType)
    plan: Mapped[dict] = mapped_column(JSONType)
    progress: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    summary: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # A running job asked to pause: its worker's next fenced write answers PAUSE, and the
    # training stops at the next epoch boundary as ``paused`` (service/lifecycle/pausing.py).
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default=false())
    # Attempts that ended at an epoch boundary on purpose (a pause, or a worker asked to shut
    # down): they do not count against KERASYARD_MAX_ATTEMPTS, which counts lost workers.
    stopped_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sweep_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Sweep trials: the trial's index in the sweep (grid order, or the order random/tpe asked
    # for it), which seed of the configuration this is, the swept values and Optuna's trial id.
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repeat: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trial_params: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A trial that differs from another only in fit.epochs is recorded from that one's
    # training ("train once for the epochs axis"); this is the id of the job that trains it.
    trained_by: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # The epoch the current attempt went on after, from the job's checkpoint (a resumed
    # training); None when it started from scratch.
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Written by the worker's heartbeat thread; a running job whose heartbeat is stale belongs
    # to a worker that died (or hangs), and the next claim takes it over. ``attempts`` is the
    # fence: every write of a worker is conditional on the attempt number its claim took.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                            nullable=True)

    __table_args__ = (
        Index("ix_jobs_created_id", "created_at", "id"),
        # One job per (trial, seed): a scheduler that runs twice cannot duplicate a trial.
        UniqueConstraint("sweep_id", "trial_number", "repeat", name="uq_jobs_sweep_trial_repeat"),
    )


class SweepStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    # POST /sweeps/{id}/pause: its trials paused, no new ones started until it is resumed.
    paused = "paused"


SWEEP_TERMINAL = frozenset({SweepStatus.succeeded, SweepStatus.failed, SweepStatus.cancelled})


class Sweep(Base):
    """A hyperparameter sweep. Its trials are jobs (``Job.sweep_id``); Optuna's study, in the
    same database, holds what the sampler and pruner need."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    experiment: Mapped[str] = mapped_column(String(200))
    status: Mapped[SweepStatus] = mapped_column(_status_type(SweepStatus),
                                                default=SweepStatus.queued, index=True)
    method: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict] = mapped_column(JSONType)
    # What the scheduler works from: the normalised parameters, the grid's configurations and
    # the groups trained once for the epochs axis, the number of trials.
    plan: Mapped[dict] = mapped_column(JSONType)
    study_name: Mapped[str] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # A lease, not a lock: whoever advances the sweep holds it for a few seconds; a holder
    # that died loses it when it expires.
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                            nullable=True)
    best: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    report: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                            nullable=True)

    __table_args__ = (Index("ix_sweeps_created_id", "created_at", "id"),)


class JobEpoch(Base):
    """One row per finished epoch: the job's history, readable while it trains."""

    __tablename__ = "job_epochs"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    metrics: Mapped[dict] = mapped_column(JSONType)


class Checkpoint(Base):
    """The newest checkpoint of a running (or requeued) job's training, one row per job,
    overwritten: its whole state at the end of epoch ``epoch`` (worker/training/checkpoint.py
    writes and reads ``state``). Written fenced by the attempt that trained it; the next
    attempt goes on from it. In the database so that a worker on any host can read it; gone
    when the job ends."""

    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    """An uploaded CSV or .npz. The bytes live in the database so any worker host can read
    them. ``format`` says which; an .npz has no columns, its ``profile`` describes its arrays
    (service/uploads/npz.py)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str | None] = mapped_column(String(300), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    n_rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list] = mapped_column(JSONType)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    format: Mapped[str] = mapped_column(String(8), default="csv", server_default="csv")
    profile: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class KerasModel(Base):
    """An uploaded ``.keras`` model (service/uploads/keras_file.py read it without TensorFlow):
    its bytes, for the worker that trains it, and its layers as kerasyard's layer specs, for
    the door's checks of the jobs that name it."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str | None] = mapped_column(String(300), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    keras_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    input_shape: Mapped[list] = mapped_column(JSONType)
    input_dtype: Mapped[str] = mapped_column(String(16))
    # Its parameters as the door's graph (service.jobspec.graph) counts them.
    n_params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    layers: Mapped[list] = mapped_column(JSONType)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_models_created_id", "created_at", "id"),)


class WorkerNode(Base):
    """A Celery worker as it last reported itself (worker/presence.py): the queues it consumes,
    the queues it refused and why (a gpu worker that sees no GPU), and its device. The API's
    /health lists the workers seen within the last few heartbeats."""

    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list] = mapped_column(JSONType)
    refused: Mapped[dict] = mapped_column(JSONType)
    device: Mapped[str | None] = mapped_column(String(300), nullable=True)
    keras_backend: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                   index=True)
