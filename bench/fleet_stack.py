"""The control plane bench/fleet.py loads: PostgreSQL, Redis, MLflow and the API, each started
as docker-compose.yml runs it, on loopback ports of their own.

- PostgreSQL: a throw-away cluster (devstack.stores.PostgresServer) with compose's
  ``max_connections`` (``--max-connections``: compose's POSTGRES_MAX_CONNECTIONS default after,
  PostgreSQL's 100 before), a ``kerasyard`` database migrated as compose's ``migrate`` does
  (service.migrate), and MLflow's ``mlflow`` database.
- Redis: devstack.stores.RedisServer (the broker the API sends each job to).
- MLflow: ``mlflow server`` on the ``mlflow`` database with compose's 2 workers (no basic-auth:
  see bench/README.md).
- The API: gunicorn ``service.wsgi:app`` with compose's 2 workers of 4 threads, its
  re-dispatcher rounds included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.processes import Process, free_port, wait_http
from devstack.servers import mlflow_server_cmd, mlflow_server_env
from devstack.stores import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent


class Stack:
    """Started on construction; :meth:`stop` ends all of it (only the processes it started)."""

    def __init__(self, max_connections: int, mlflow_workers: int = 2, api_workers: int = 2):
        self.base = Path(tempfile.mkdtemp(prefix="kerasyard-fleet-"))
        self._procs: list[Process] = []
        self.pg = PostgresServer()
        try:
            self._start(max_connections, mlflow_workers, api_workers)
        except BaseException:
            self.stop()
            raise

    def _start(self, max_connections: int, mlflow_workers: int, api_workers: int) -> None:
        import psycopg

        with psycopg.connect(self.pg.admin_url, autocommit=True) as c:
            c.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
            c.execute("CREATE DATABASE kerasyard")
            c.execute("CREATE DATABASE mlflow")
        self._restart_pg()
        host = f"postgres@127.0.0.1:{self.pg.port}"
        self.database_url = f"postgresql+psycopg://{host}/kerasyard"
        self.mlflow_db_url = f"postgresql+psycopg://{host}/mlflow"
        self.stats_url = f"postgresql://{host}/kerasyard"
        env = dict(os.environ, DATABASE_URL=self.database_url)
        subprocess.run([sys.executable, "-m", "service.migrate"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=300)
        (self.base / "redis").mkdir()
        self.redis = RedisServer(self.base / "redis")
        self._procs.append(self.redis)
        self.broker_url = f"redis://127.0.0.1:{self.redis.port}/0"
        self.mlflow_url = self._start_mlflow(mlflow_workers)
        self.api_url = self._start_api(api_workers)

    def _restart_pg(self) -> None:
        """ALTER SYSTEM's max_connections takes a restart (the folder stays)."""
        proc = self.pg.proc
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        self.pg._log.close()
        self.pg.start()

    def _start_mlflow(self, workers: int) -> str:
        port = free_port()
        cmd = mlflow_server_cmd("127.0.0.1", port, self.mlflow_db_url,
                                str(self.base / "mlartifacts"))
        cmd[cmd.index("--workers") + 1] = str(workers)
        proc = Process("mlflow server", cmd, env=mlflow_server_env(),
                       log_path=self.base / "mlflow.log", cwd=self.base, new_session=True)
        self._procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 240, proc.proc, proc.log_path)
        return url

    def api_env(self) -> dict:
        env = dict(os.environ)
        env.pop("KERASYARD_API_TOKEN", None)
        env.update(DATABASE_URL=self.database_url, BROKER_URL=self.broker_url,
                   MLFLOW_TRACKING_URI=self.mlflow_url, MLFLOW_UI_URL=self.mlflow_url,
                   KERASYARD_DATA_DIR=str(self.base / "data"))
        return env

    def _start_api(self, workers: int) -> str:
        port = free_port()
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        cmd = [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
               "--threads", "4", "--timeout", "60", "service.wsgi:app"]
        proc = Process("gunicorn", cmd, env=self.api_env(), log_path=self.base / "api.log",
                       cwd=ROOT, new_session=True)
        self._procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/v1/health", 120, proc.proc, proc.log_path)
        return url

    def stop(self) -> None:
        for proc in reversed(self._procs):
            try:
                proc.stop(timeout=20)
            except Exception:
                pass
        self.pg.stop()
        time.sleep(0.1)
