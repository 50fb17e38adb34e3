"""The Celery app of the worker. Start it with:

    celery -A worker.celery_app worker -Q cpu,gpu --concurrency 1

TensorFlow/Keras are imported only inside the prefork child (worker_process_init), never in
the parent: a CUDA context or TF thread pool does not survive fork.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from service.config import celery_config, get_settings

settings = get_settings()

# Lower MLflow's HTTP retries so a dead tracking server fails a log call in seconds, not minutes
# (MLflow's defaults retry for ~2 minutes per call).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# No usage telemetry from workers: its threads compete with training and, behind a firewall,
# keep retrying a host they cannot reach.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("KERAS_BACKEND", settings.keras_backend)
# TensorFlow never returns GPU memory; at least don't take it all up front.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if settings.tf_threads > 0:  # read by TensorFlow when the child creates its first context
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(settings.tf_threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(settings.tf_threads))

app = Celery("kerasyard", include=["worker.tasks"])
app.conf.update(celery_config(settings))  # worker_proc_alive_timeout: see celery_config

log = logging.getLogger(__name__)


@worker_process_init.connect
def _init_child(**_kwargs) -> None:
    from service import worker_api
    from worker import shutdown

    # Connections inherited from the parent must not be shared across fork (the parent keeps
    # none: see below); a training keeps one (service/store/db.py POOLS).
    worker_api.dispose_connections()
    worker_api.use_pool(settings.db_pool or "training")
    # The main process's warm shutdown asks this child to stop its training with a
    # checkpoint (worker/shutdown.py).
    shutdown.install_child_handler()
    if settings.worker_preload_keras:
        # Import Keras (and its backend) once per child, before the first task arrives, so a
        # job's wall time is training, not imports.
        import keras

        log.info("child %s ready with Keras backend %s", os.getpid(), keras.backend.backend())


# --- GPU check and the workers table (worker/gpu/, worker/presence.py) -----------------------
_presence = None
_controller = None  # the WorkController: its pool's children, on a warm shutdown


@celeryd_after_setup.connect
def _check_gpu(sender, instance, **_kwargs) -> None:
    """Before the consumer starts: a worker on the gpu queue whose backend sees no GPU stops
    consuming gpu (and says why); the others keep going."""
    global _presence, _controller
    from worker import gpu, presence

    _controller = instance
    _choose_pool(instance)
    queues = instance.app.amqp.queues
    names = sorted(queues.consume_from)
    info, refused = gpu.check_worker(names, settings.keras_backend, settings.require_gpu,
                                     settings.gpu_probe_timeout_s)
    if refused:
        queues.deselect(list(refused))
    _presence = presence.Presence(settings, str(sender), sorted(queues.consume_from), refused,
                                  gpu.describe(info) if info else None, settings.keras_backend)


def _choose_pool(instance) -> None:
    """A prefork parent trains nothing: it keeps no database connection between its few writes
    (its presence), so it hands none to a forked child and takes no slot of a fleet's
    PostgreSQL. The solo and thread pools train in this process: a training's pool."""
    from service import worker_api

    pool = getattr(instance, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    prefork = "prefork" in name or "processes" in name
    worker_api.use_pool("per-write" if prefork else (settings.db_pool or "training"))


@worker_ready.connect
def _publish(**_kwargs) -> None:
    if _presence is not None:
        _presence.start()


@worker_shutting_down.connect
def _stop_trainings(how: str = "Warm", **_kwargs) -> None:
    """SIGTERM (warm shutdown): the trainings stop at their next epoch boundary with a
    checkpoint and their jobs go back to the queue (worker/shutdown.py)."""
    if how == "Warm":
        from worker import shutdown

        shutdown.forward_to_children(_controller)


@worker_shutdown.connect
def _withdraw(**_kwargs) -> None:
    if _presence is not None:
        _presence.stop()
