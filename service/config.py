"""One settings module, read from the environment, shared by the API, the worker and Alembic.

Every setting has an embedded default so that `make run` works on a laptop with nothing but
Python: SQLite for jobs, kombu's filesystem transport as the broker, and an `mlflow server`
that the embedded runner starts on loopback.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path


def _env_number(name: str, default, cast=int):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        kind = "an integer" if cast is int else "a number"
        raise ValueError(f"environment variable {name}={raw!r} must be {kind}") from exc


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int)


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float)


# The API refuses a shorter KERASYARD_API_TOKEN (a guessable token is an open door).
MIN_API_TOKEN_LENGTH = 16


class ConfigError(ValueError):
    """A setting the service refuses to start with; the message names the variable."""


def check_api_token(token: str | None) -> None:
    """Refuse a bearer token under :data:`MIN_API_TOKEN_LENGTH` characters (unset = no auth).

    Raises:
        ConfigError: naming KERASYARD_API_TOKEN and its length, never its value.
    """
    if token is not None and len(token) < MIN_API_TOKEN_LENGTH:
        raise ConfigError(
            f"KERASYARD_API_TOKEN is {len(token)} characters long; it must have at least "
            f"{MIN_API_TOKEN_LENGTH} (e.g. `openssl rand -hex 24`), or be unset to turn "
            "authentication off (local use only)")


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``, for logs."""
    import re

    return re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", url)


# MLflow 3's UI opens an experiment in its GenAI mode ("Evaluations", judges, prompts) unless
# the link carries ``workflowType=machine_learning`` (or the browser last chose that mode):
# every link kerasyard gives opens the "Model training" view.
MLFLOW_UI_MODE = "workflowType=machine_learning"


def mlflow_run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A link into the MLflow UI's model-training view of one run."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MLFLOW_UI_MODE}"


def mlflow_artifact_url(ui_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """A link to one artifact in the MLflow UI, which shows it inline (HTML, images, text)."""
    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/"
            f"{path}?{MLFLOW_UI_MODE}")


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


# The metadata key of a field's environment variable (``_env``).
ENV = "env"


def _env(name: str, default):
    """A field read from the environment variable ``name`` (:meth:`Settings.from_env`)."""
    return dataclasses.field(default=default, metadata={ENV: name})


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)  # set but empty is the empty string


def _env_optional(name: str, default: str | None) -> str | None:
    return os.environ.get(name) or default  # set but empty is unset


# How :meth:`Settings.from_env` parses a field's variable, by the field's annotation.
_PARSERS = {"str": _env_str, "str | None": _env_optional, "int": _env_int,
            "float": _env_float, "bool": _env_bool}


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    mlflow_tracking_uri: str
    # Base URL people open in a browser; differs from the tracking URI behind compose.
    mlflow_ui_url: str
    default_queue: str = _env("KERASYARD_DEFAULT_QUEUE", "cpu")
    max_params: int = _env("KERASYARD_MAX_PARAMS", 5_000_000)
    max_epochs: int = _env("KERASYARD_MAX_EPOCHS", 10_000)
    max_samples: int = _env("KERASYARD_MAX_SAMPLES", 200_000)
    # Estimated peak memory one job may add to its training process (dataset, weights with
    # optimizer slots, activations, validation pass); specs above it are refused at the door.
    # Sized for the compose worker's memory limit less TensorFlow's own footprint.
    max_job_memory_mb: int = _env("KERASYARD_MAX_JOB_MEMORY_MB", 2048)
    max_upload_bytes: int = _env("KERASYARD_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
    # Where a worker extracts an uploaded .npz it streams (memory-mapped .npy files, one folder
    # per upload's sha256, reused by later jobs); unset: kerasyard-data in the temp directory.
    data_cache_dir: str | None = _env("KERASYARD_DATA_CACHE_DIR", None)
    api_token: str | None = _env("KERASYARD_API_TOKEN", None)
    keras_backend: str = _env("KERAS_BACKEND", "tensorflow")
    # Largest number of train steps fused into one compiled call; Keras runs callbacks once per
    # execution, so we pick a divisor of steps_per_epoch and per-epoch logging stays exact.
    max_steps_per_execution: int = _env("KERASYARD_MAX_STEPS_PER_EXECUTION", 256)
    # Sweep trials trained together as one model (one tower each) by a CPU worker / a GPU
    # worker (the sweep's resources.queue "gpu"); the memory estimate caps them too.
    pack_max_towers: int = _env("KERASYARD_PACK_MAX_TOWERS", 16)
    pack_max_towers_gpu: int = _env("KERASYARD_PACK_MAX_TOWERS_GPU", 128)
    # How often the worker's reporter thread flushes epochs to MLflow / the database and reads
    # the cancel flag at a training's start; the interval then grows by half each write up to
    # report_interval_max_s (worker/recording/pace.py), so a fleet's writes grow with the
    # number of trainings divided by that bound, not by this. Fit never waits for either.
    report_interval_s: float = _env("KERASYARD_REPORT_INTERVAL_S", 0.25)
    # The longest interval between a training's progress writes (and cancel/pause reads), and
    # the heartbeat's: progress read through the API is at most this (plus an epoch) old.
    # Keep it well below stale_heartbeat_s.
    report_interval_max_s: float = _env("KERASYARD_REPORT_INTERVAL_MAX_S", 4.0)
    # The PostgreSQL connections a process keeps (service/store/db.py POOLS): empty for its
    # role's default (API "service": 5 + 5; training process "training": 1 + 1; the Celery
    # parent "per-write": none); "per-write" for training processes too when a fleet has more
    # of them than PostgreSQL has connections and no pooler in front (docs/fleet.md).
    db_pool: str = _env("KERASYARD_DB_POOL", "")
    # MLflow gets fewer, larger log_batch calls: each call costs the training process GIL time
    # and the tracking server a transaction, and the UI refreshes no faster than this anyway
    # (nor faster than the progress writes' pace: a long training's calls back off with it).
    mlflow_flush_interval_s: float = _env("KERASYARD_MLFLOW_FLUSH_INTERVAL_S", 1.0)
    # ...each holding only as many waiting epochs as keep MLflow calls within this share of the
    # run's wall clock; the rest follow after fit (on a small machine the server's ingest
    # competes with training for the same cores).
    mlflow_max_duty: float = _env("KERASYARD_MLFLOW_MAX_DUTY", 0.01)
    mlflow_logging: bool = _env("KERASYARD_MLFLOW_LOGGING", True)
    log_model: bool = _env("KERASYARD_LOG_MODEL", True)
    # A run's plots as SVG written without matplotlib and its model logged in a few requests
    # (worker/recording/artifacts.py): ~1 s less per run on 2 cores. Off: matplotlib PNGs and
    # MLflow's own Model.log, the recording before 2026-12-02 (bench/perjob_bench.py's
    # baseline).
    lean_recording: bool = _env("KERASYARD_LEAN_RECORDING", True)
    task_soft_time_limit_s: int = _env("KERASYARD_TASK_SOFT_TIME_LIMIT_S", 6 * 3600)
    task_time_limit_s: int = _env("KERASYARD_TASK_TIME_LIMIT_S", 6 * 3600 + 300)
    max_attempts: int = _env("KERASYARD_MAX_ATTEMPTS", 3)
    # A running job whose heartbeat (written by the worker's reporter with each progress write,
    # or by its heartbeat thread at least every report_interval_max_s, from claim to the end)
    # is older than this belongs to a dead worker: the API re-sends its id
    # and the next worker to claim it takes over.
    stale_heartbeat_s: int = _env("KERASYARD_STALE_HEARTBEAT_S", 120)
    # Seconds between the API re-dispatcher's rounds (jobs never sent, jobs gone silent).
    redispatch_after_s: int = _env("KERASYARD_REDISPATCH_AFTER_S", 30)
    # A queued job the broker has had this long without any worker claiming it is sent again
    # (a message lost with a broker's last second of AOF, or acked away by a worker that
    # could not reach the database); the claim drops the duplicate if there is one.
    resend_unclaimed_s: int = _env("KERASYARD_RESEND_UNCLAIMED_S", 600)
    # A worker retries a database call that failed on the connection (the database restarting,
    # a network cut) this long, with backoff, before it gives up: the claim then hands the
    # task back to Celery to be retried later (never acked away), and the final status write
    # of a finished training keeps trying for this long before the result is given up.
    db_retry_s: float = _env("KERASYARD_DB_RETRY_S", 300.0)
    worker_preload_keras: bool = _env("KERASYARD_WORKER_PRELOAD_KERAS", True)
    # Threads TensorFlow may use per training process (intra- and inter-op); 0 = TF's default
    # (every core). The lecture-sized MLPs this service is for ran an epoch in 13 ms with 1
    # thread against 26 ms with TF's default on 2 cores: the thread pools cost more than the
    # matrix work. Raise it for wide models on many-core hosts.
    tf_threads: int = _env("KERASYARD_TF_THREADS", 1)
    # A worker that consumes the gpu queue checks at start that its Keras backend computes on
    # a GPU (worker/gpu/: a compiled matmul on GPU 0); if not, it stops consuming gpu and says
    # so (log, /api/v1/health) instead of training "GPU" jobs on the CPU. False: development
    # machines only.
    require_gpu: bool = _env("KERASYARD_REQUIRE_GPU", True)
    # The check imports the backend in a subprocess (TensorFlow takes seconds, more on a busy
    # host) and runs its matmul (minutes where the driver compiles PTX at first use: TensorFlow
    # 2.21 on Hopper or newer); past this it counts as "no GPU".
    gpu_probe_timeout_s: float = _env("KERASYARD_GPU_PROBE_TIMEOUT_S", 180.0)
    # `python -m service.migrate` retries this long while the database refuses connections
    # (PostgreSQL still initialising its volume, or not listening on TCP yet).
    migrate_wait_s: float = _env("KERASYARD_MIGRATE_WAIT_S", 120.0)
    # How long a worker keeps retrying MLflow (with backoff) when it does not answer at the
    # start of a run (experiment, run, params) or at its end (last metrics, artifacts, model,
    # end status) before the job fails, naming MLflow's URL and what it was doing. Outages
    # during training never fail a job: the epochs wait for the next flush.
    mlflow_retry_s: float = _env("KERASYARD_MLFLOW_RETRY_S", 120.0)
    # Seconds between the API's requests to a worker to end the MLflow runs left RUNNING by
    # jobs that have ended (a worker killed by the OOM killer, MLflow down at a run's end).
    reconcile_s: float = _env("KERASYARD_RECONCILE_S", 300.0)
    # A training saves its whole state (a checkpoint, in the database) at the first epoch
    # boundary after this many seconds, and again every as many, so that the next attempt of
    # a job whose worker was lost goes on from there instead of from epoch 1; less often
    # when a checkpoint takes longer than 2 % of the interval. 0 turns checkpoints off.
    checkpoint_s: float = _env("KERASYARD_CHECKPOINT_S", 30.0)

    @property
    def report_bound_s(self) -> float:
        """The longest interval between a training's progress writes and its heartbeats:
        ``report_interval_max_s``, but never more than a quarter of ``stale_heartbeat_s``, so
        a live training never looks silent (a beat may come 1.5 intervals apart)."""
        return max(self.report_interval_s,
                   min(self.report_interval_max_s, self.stale_heartbeat_s / 4))

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the environment gives: each field's variable (``_env``), parsed as
        its type, its default where unset; the five without a default of their own follow
        from KERASYARD_DATA_DIR and MLFLOW_TRACKING_URI.

        Raises:
            ValueError: naming the variable, when a number does not parse.
        """
        data_dir = Path(os.environ.get("KERASYARD_DATA_DIR", ".kerasyard")).resolve()
        tracking = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5050")
        return cls(
            data_dir=data_dir,
            database_url=os.environ.get("DATABASE_URL", f"sqlite:///{data_dir / 'kerasyard.db'}"),
            broker_url=os.environ.get("BROKER_URL", "filesystem://"),
            mlflow_tracking_uri=tracking,
            mlflow_ui_url=os.environ.get("MLFLOW_UI_URL", tracking).rstrip("/"),
            **{f.name: _PARSERS[f.type](f.metadata[ENV], f.default)
               for f in dataclasses.fields(cls) if ENV in f.metadata},
        )

    @property
    def redispatch_interval_s(self) -> float:
        """Period of the API's re-dispatcher thread (never faster than every 5 s)."""
        return max(5, self.redispatch_after_s)

    @property
    def broker_data_dir(self) -> Path:
        return self.data_dir / "broker"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def celery_config(settings: Settings) -> dict:
    """Celery settings shared by the sender (service.queue) and the worker.

    Each non-default has its reason beside it.
    """
    transport_options: dict = {
        # Redis re-delivers an unacked task after this long; it must exceed the hard time limit,
        # or a long training would be started twice.
        "visibility_timeout": settings.task_time_limit_s + 3600,
    }
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.broker_data_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options.update(
            {
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"),
                # kombu's default is ./control relative to the working directory: two stacks
                # started from one folder would share it, and it would land in the repo.
                "control_folder": str(folder / "control"),
                "store_processed": False,
                # kombu polls the folder; its 1 s default would add up to a second to every
                # job's start. Listing a small folder 5 times a second costs nothing.
                "polling_interval": 0.2,
            }
        )
    else:
        # A publish against a dead broker must fail fast: the job row is already committed
        # and the API's re-dispatcher sends it later.
        transport_options.update({"max_retries": 2, "interval_start": 0, "interval_step": 0.5})
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # Ack after the task body returns, so a worker that dies mid-training gives the
        # message back instead of losing the job.
        "task_acks_late": True,
        # ...and also when the child process is killed (OOM, segfault in a kernel).
        "task_reject_on_worker_lost": True,
        # One training at a time per child; never hoard jobs another worker could start.
        "worker_prefetch_multiplier": 1,
        # The database is the source of truth; no result backend is needed.
        "task_ignore_result": True,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_default_queue": settings.default_queue,
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        # A new child imports Keras in worker_process_init (4-5 s here, more under load);
        # Celery's 4 s default killed replacements before they were up, again and again.
        "worker_proc_alive_timeout": 120,
        "task_serializer": "json",
        "accept_content": ["json"],
    }
