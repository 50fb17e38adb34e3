"""The stack's own servers: :class:`MlflowServer` (``mlflow server`` on SQLite),
:class:`WorkerProcess` (a Celery worker of this checkout, with the readiness signal it logs) and
:class:`ApiServer` (the Flask app over real HTTP, in a thread or in the foreground)."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .processes import ROOT, WORKER_READY, Process, StackError, _tail_note, free_port, wait_http

if TYPE_CHECKING:
    from flask import Flask

    from service.config import Settings


def mlflow_server_cmd(host: str, port: int, backend_uri: str, artifacts: str,
                      allowed_hosts: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
           "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts,
           "--workers", "1"]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def mlflow_server_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    # MLflow 3's job runner (huey consumers for GenAI scorers) is not used by kerasyard; on a
    # small machine its seven processes compete with training for the CPU.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


class MlflowServer(Process):
    """``mlflow server`` on SQLite (``data_dir/mlflow.db``) with its artifacts in
    ``data_dir/mlartifacts``; started and waited for (``/health``) on construction."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                 env: dict | None = None, log_path: Path | None = None,
                 cwd: Path | str | None = None, new_session: bool = False,
                 append: bool = False, timeout: float = 180,
                 parent_death_signal: int | None = None):
        data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        super().__init__("mlflow server",
                         mlflow_server_cmd(host, self.port, f"sqlite:///{data_dir / 'mlflow.db'}",
                                           str(data_dir / "mlartifacts")),
                         env=mlflow_server_env(env), log_path=log_path or data_dir / "mlflow.log",
                         cwd=cwd, new_session=new_session, append=append,
                         parent_death_signal=parent_death_signal)
        try:
            wait_http(f"{self.url}/health", timeout, self.proc, self.log_path)
        except BaseException:  # a StackError, or a signal's SystemExit while we wait
            self.stop(timeout=5)
            raise


# --- the Celery worker ---------------------------------------------------------------------


def worker_cmd(queues: str = "cpu,gpu", concurrency: int = 1, name: str = "embedded@%h",
               max_tasks_per_child: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
           "--pool", "prefork", "--concurrency", str(concurrency), "-n", name,
           "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    if max_tasks_per_child:
        cmd += ["--max-tasks-per-child", str(max_tasks_per_child)]
    return cmd


def worker_env(settings: Settings, base: dict | None = None, **extra: str) -> dict:
    """The environment that gives a worker process ``settings``' database, broker, MLflow,
    data folder and report intervals."""
    env = dict(os.environ if base is None else base)
    env.update({
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": settings.broker_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "KERASYARD_DATA_DIR": str(settings.data_dir),
        "KERASYARD_REPORT_INTERVAL_S": str(settings.report_interval_s),
        # The API's stale bound may be shorter than the worker's default: its writes keep
        # within a quarter of the API's (service.config.Settings.report_bound_s).
        "KERASYARD_REPORT_INTERVAL_MAX_S": str(settings.report_bound_s),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class WorkerProcess(Process):
    """A Celery worker (prefork pool) on ``queues``. Its output goes to ``log_path`` (where
    :meth:`wait_ready` looks for the readiness line) or, when None, to this process's own."""

    def __init__(self, env: dict | None, log_path: Path | None, queues: str = "cpu,gpu",
                 concurrency: int = 1, name: str | None = None,
                 cwd: Path | str | None = None, new_session: bool = False,
                 max_tasks_per_child: int | None = None,
                 parent_death_signal: int | None = None):
        env = dict(os.environ if env is None else env)
        # This checkout's `worker` package, whatever the cwd (and whatever an editable install
        # elsewhere points at).
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(ROOT) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + paths)
        super().__init__("the Celery worker",
                         worker_cmd(queues=queues, concurrency=concurrency,
                                    name=name or f"dev-{uuid.uuid4().hex[:6]}@%h",
                                    max_tasks_per_child=max_tasks_per_child),
                         env=env, log_path=log_path, cwd=ROOT if cwd is None else cwd,
                         new_session=new_session, parent_death_signal=parent_death_signal)

    @staticmethod
    def ready_in(log_text: str) -> bool:
        """Whether a worker's log says a child is ready to train (Keras imported)."""
        return WORKER_READY in log_text

    def wait_ready(self, timeout: float = 180, interval: float = 0.2) -> float:
        """Wait until a pool child has imported Keras; seconds waited. :class:`StackError` if
        the worker exits or time runs out."""
        if self.log_path is None:
            raise StackError("wait_ready needs the worker's log_path")
        t0 = time.monotonic()
        while True:
            self.check_alive()
            if self.ready_in(self.text()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise StackError(f"the worker did not log {WORKER_READY!r} within {timeout:.0f} s"
                                 + _tail_note(self.log_path))
            time.sleep(interval)


# --- the API over HTTP ---------------------------------------------------------------------


class ApiServer:
    """A Flask app served by werkzeug on ``host:port`` (port 0: a free one), threaded.

    :meth:`start` serves it from a daemon thread (tests, CLI checks); :meth:`serve_forever`
    in the foreground (the run command). ``quiet`` drops the per-request log lines.
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, quiet: bool = False):
        from werkzeug.serving import WSGIRequestHandler, make_server

        handler = WSGIRequestHandler
        if quiet:
            class QuietHandler(WSGIRequestHandler):
                def log_request(self, *args, **kwargs):  # watch loops poll many times a second
                    pass

            handler = QuietHandler
        self.server = make_server(host, port, app, threaded=True, request_handler=handler)
        self.host, self.port = host, self.server.port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"api-{self.port}")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- Redis ---------------------------------------------------------------------------------


