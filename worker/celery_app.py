"""The Celery app of the worker. Start it with:

    celery -A worker.celery_app worker -Q cpu,gpu --concurrency 1

TensorFlow/Keras are imported only inside the prefork child (worker_process_init), never in
the parent: a CUDA context or TF thread pool does not survive fork.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_process_init

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
    from service.db import dispose_engines
    from service.sweeps.for_worker import dispose_connections

    # Connections inherited from the parent must not be shared across fork.
    dispose_engines()
    dispose_connections()
    if settings.worker_preload_keras:
        # Import Keras (and its backend) once per child, before the first task arrives, so a
        # job's wall time is training, not imports.
        import keras

        log.info("child %s ready with Keras backend %s", os.getpid(), keras.backend.backend())
