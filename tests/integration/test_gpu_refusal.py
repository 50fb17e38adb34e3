"""No silent CPU fallback: real Celery worker processes started on the gpu queue on this machine,
which has no GPU. The worker started with ``-Q cpu,gpu`` refuses gpu and keeps serving cpu; the one
started with ``-Q gpu`` consumes nothing; a gpu job stays queued (its message stays in Redis), and
/api/v1/health says which worker refused which queue and why."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.helpers import ROOT, tiny_spec, wait_for

from .conftest import _create_database, _drop_database

pytestmark = pytest.mark.integration

# Its own Redis db: the session worker of the other tests would take (and drop) these jobs.
GPU_REDIS = os.environ.get("KERASYARD_TEST_GPU_REDIS", "redis://127.0.0.1:6379/7")


def _has_gpu() -> bool:
    from worker.gpu import probe

    return bool(probe(os.environ.get("KERAS_BACKEND", "tensorflow"), 180).get("gpus"))


class Worker:
    def __init__(self, queues: str, env: dict, log_path: Path):
        self.name = f"gpucheck-{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@%h"
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - written by the process until stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
             "--pool", "prefork", "--concurrency", "1", "-n", self.name, "--loglevel", "INFO",
             "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.text()}")
        return " ready." in self.text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def test_gpu_queue_workers_without_a_gpu_refuse_gpu_jobs_and_keep_serving_cpu(tmp_path):
    if _has_gpu():
        pytest.skip("this machine has a GPU: the refusal cannot be shown here")
    name = f"kerasyard_gpucheck_{uuid.uuid4().hex[:8]}"
    db_url = _create_database(name)
    broker = redis.Redis.from_url(GPU_REDIS)
    broker.flushdb()
    workers: list[Worker] = []
    try:
        from service.config import Settings
        from service.migrate import upgrade

        upgrade(db_url)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KERASYARD_", "MLFLOW_", "DATABASE_URL", "BROKER_URL"))}
        env.update(DATABASE_URL=db_url, BROKER_URL=GPU_REDIS, KERASYARD_MLFLOW_LOGGING="false",
                   KERASYARD_DATA_DIR=str(tmp_path / "data"), MLFLOW_TRACKING_URI="file:///dev/null",
                   KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        both = Worker("cpu,gpu", env, tmp_path / "worker-cpu-gpu.log")
        only_gpu = Worker("gpu", env, tmp_path / "worker-gpu.log")
        workers += [both, only_gpu]
        wait_for(lambda: both.ready() and only_gpu.ready(), 300, 0.5, "both workers to start")

        for w in workers:
            text = w.text()
            assert "ERROR" in text and "GPU check: no GPU visible to the Keras backend " \
                "tensorflow" in text, text[-3000:]
            assert "refuses the 'gpu' queue (it will not train gpu jobs on a CPU)" in text
        assert "keeps serving cpu" in both.text()
        assert "consumes no queue until restarted" in only_gpu.text()

        from service.api import create_app

        settings = dataclasses.replace(
            Settings.from_env(), database_url=db_url, broker_url=GPU_REDIS,
            mlflow_tracking_uri="file:///dev/null", api_token=None, data_dir=tmp_path / "api")
        client = create_app(settings).test_client()
        gpu_job = client.post("/api/v1/jobs", json=tiny_spec("on-gpu", epochs=2,
                                                             resources={"queue": "gpu"}))
        assert gpu_job.status_code == 202, gpu_job.get_json()
        cpu_job = client.post("/api/v1/jobs", json=tiny_spec("on-cpu", epochs=2,
                                                             resources={"queue": "cpu"}))
        assert cpu_job.status_code == 202, cpu_job.get_json()

        def finished(job_id: str):
            for w in workers:
                w.ready()
            body = client.get(f"/api/v1/jobs/{job_id}").get_json()
            return body if body["status"] not in ("queued", "running") else None

        # The cpu,gpu worker keeps serving cpu: it takes the cpu job's message...
        wait_for(lambda: broker.llen("cpu") == 0 and "Task worker.train[" in both.text(), 120,
                 0.3, "the cpu,gpu worker to take the cpu job")
        assert "Task worker.train[" not in only_gpu.text(), only_gpu.text()[-3000:]

        def cpu_job_ended():
            text = both.text()
            # The task imports the training code (worker.jobs, worker.training, ...) when it
            # runs: should that fail, the job is never claimed; say why now, not at the timeout.
            assert "ImportError" not in text and "ModuleNotFoundError" not in text, \
                "the worker's training code failed to import:\n" + text[-3000:]
            return finished(cpu_job.get_json()["id"])

        done = wait_for(cpu_job_ended, 180, 0.3, "the cpu job to finish on the cpu,gpu worker")
        time.sleep(3)  # time for a wrong worker to take the gpu job, were it listening
        # ...and nobody takes the gpu job: it stays queued, its message in the queue.
        gpu = client.get(f"/api/v1/jobs/{gpu_job.get_json()['id']}").get_json()
        assert gpu["status"] == "queued" and gpu["started_at"] is None, gpu
        assert gpu["worker"] is None, gpu
        assert broker.llen("gpu") == 1, "the gpu job's message must stay in the queue"

        health = client.get("/api/v1/health").get_json()
        workers_health = health["workers"]
        assert workers_health["ok"] is False, workers_health
        assert "refuses the gpu queue: no GPU visible to the Keras backend tensorflow" in \
            workers_health["detail"], workers_health
        listed = {w["hostname"]: w for w in workers_health["list"]}
        assert len(listed) == 2, listed
        by_queues = {tuple(w["queues"]): w for w in listed.values()}
        assert set(by_queues) == {("cpu",), ()}, by_queues
        for w in listed.values():
            assert "no GPU visible" in w["refused"]["gpu"]
            assert w["device"].startswith("CPU: ")
        # The API itself is fine: the workers entry does not make it unhealthy.
        assert set(health["components"]) == {"database", "broker", "mlflow"}

        assert done["status"] == "succeeded", (done.get("error"), both.text()[-3000:])
    finally:
        for w in workers:
            w.stop()
        broker.flushdb()
        from service.store.db import dispose_engines

        dispose_engines()
        _drop_database(name)
