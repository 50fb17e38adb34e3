"""The embedded default in one command: MLflow server, migrations, one worker, the API.

    python -m service.run            (what `make run` calls)

With nothing set it runs on SQLite, kombu's filesystem broker and a local `mlflow server`, all
on loopback. With DATABASE_URL, BROKER_URL and MLFLOW_TRACKING_URI set it uses those instead
(and starts no MLflow server of its own).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .config import Settings


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


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


def worker_cmd(queues: str = "cpu,gpu", concurrency: int = 1, name: str = "embedded@%h",
               max_tasks_per_child: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
           "--pool", "prefork", "--concurrency", str(concurrency), "-n", name,
           "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    if max_tasks_per_child:
        cmd += ["--max-tasks-per-child", str(max_tasks_per_child)]
    return cmd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("KERASYARD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("KERASYARD_PORT", "8000")))
    parser.add_argument("--mlflow-port", type=int,
                        default=int(os.environ.get("KERASYARD_MLFLOW_PORT", "5050")))
    parser.add_argument("--no-worker", action="store_true", help="run the API only")
    args = parser.parse_args(argv)

    env = os.environ.copy()
    children: list[subprocess.Popen] = []

    def stop(*_):
        for proc in reversed(children):
            if proc.poll() is None:
                proc.terminate()
        for proc in children:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        if "MLFLOW_TRACKING_URI" not in env:
            data_dir = Path(env.get("KERASYARD_DATA_DIR", ".kerasyard")).resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            url = f"http://127.0.0.1:{args.mlflow_port}"
            env["MLFLOW_TRACKING_URI"] = url
            log = open(data_dir / "mlflow-server.log", "ab")
            proc = subprocess.Popen(
                mlflow_server_cmd("127.0.0.1", args.mlflow_port,
                                  f"sqlite:///{data_dir / 'mlflow.db'}",
                                  str(data_dir / "mlartifacts")),
                env=mlflow_server_env(env), stdout=log, stderr=subprocess.STDOUT)
            children.append(proc)
            print(f"starting MLflow server on {url} (log: {data_dir / 'mlflow-server.log'})",
                  flush=True)
            wait_http(f"{url}/health", 180, proc)
        os.environ.update(env)
        settings = Settings.from_env()

        from .migrate import upgrade

        upgrade(settings.database_url)
        if not args.no_worker:
            children.append(subprocess.Popen(worker_cmd(), env=env))

        from werkzeug.serving import make_server

        from .api import create_app

        app = create_app(settings, redispatch_interval=settings.redispatch_interval_s)
        server = make_server(args.host, args.port, app, threaded=True)
        base = f"http://{args.host}:{server.port}"
        print(f"kerasyard API:  {base}/api/v1   (docs: {base}/api/v1/docs)", flush=True)
        print(f"MLflow UI:      {settings.mlflow_ui_url}", flush=True)
        print(f"submit a job:   curl -X POST {base}/api/v1/jobs -H 'Content-Type: "
              "application/json' -d @examples/lecture_mlp.json", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            stop()
        except SystemExit:
            pass


if __name__ == "__main__":
    main()
