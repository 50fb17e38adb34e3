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
from pathlib import Path

from .config import Settings
from .devstack import ApiServer, MlflowServer, Process, StackError, WorkerProcess


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
    children: list[Process] = []

    def stop(*_):
        for child in reversed(children):
            child.stop(timeout=20)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        if "MLFLOW_TRACKING_URI" not in env:
            data_dir = Path(env.get("KERASYARD_DATA_DIR", ".kerasyard")).resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            log_path = data_dir / "mlflow-server.log"
            print(f"starting MLflow server on http://127.0.0.1:{args.mlflow_port} "
                  f"(log: {log_path})", flush=True)
            mlflow = MlflowServer(data_dir, port=args.mlflow_port, env=env, log_path=log_path,
                                  append=True)
            children.append(mlflow)
            env["MLFLOW_TRACKING_URI"] = mlflow.url
        os.environ.update(env)
        settings = Settings.from_env()

        from .migrate import upgrade

        upgrade(settings.database_url)
        if not args.no_worker:  # its log goes to this terminal
            children.append(WorkerProcess(env, log_path=None, name="embedded@%h",
                                          cwd=os.getcwd()))

        from .api import create_app

        app = create_app(settings, redispatch_interval=settings.redispatch_interval_s)
        server = ApiServer(app, args.host, args.port)
        base = server.url
        print(f"kerasyard API:  {base}/api/v1   (docs: {base}/api/v1/docs)", flush=True)
        print(f"MLflow UI:      {settings.mlflow_ui_url}", flush=True)
        print(f"submit a job:   curl -X POST {base}/api/v1/jobs -H 'Content-Type: "
              "application/json' -d @examples/lecture_mlp.json", flush=True)
        server.serve_forever()
    except StackError as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        try:
            stop()
        except SystemExit:
            pass

if __name__ == "__main__":
    main()
