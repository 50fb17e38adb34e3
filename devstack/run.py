"""The embedded default in one command: MLflow server, migrations, one worker, the API.

    python -m devstack.run            (what `make run` calls)
    python -m devstack.run -v         (also one log line per HTTP request: `make run ARGS=-v`)

With nothing set it runs on SQLite, kombu's filesystem broker and a local `mlflow server`, all
on loopback. With DATABASE_URL, BROKER_URL and MLFLOW_TRACKING_URI set it uses those instead
(and starts no MLflow server of its own).

Quiet by default: no line per request (a watched job polls twice a second), and each job or
sweep that ends prints one line with its MLflow link, then the URLs again. Ctrl-C (SIGINT) and
SIGTERM both stop the worker and the MLflow server, then the API.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
from pathlib import Path

from service.config import Settings

from .processes import Process, StackError
from .servers import ApiServer, MlflowServer, WorkerProcess

# How often the run command looks for jobs and sweeps that ended.
WATCH_INTERVAL_S = 2.0
# How long Celery's warm shutdown may take (an idle worker: well under a second) before the
# worker's whole process group, a training pool child included, is stopped.
WORKER_WARM_STOP_S = 10


def stop_child(child: Process) -> None:
    """A worker: SIGTERM to its main process first, Celery's warm shutdown, which stops the
    pool itself (SIGTERM to the whole group kills the pool child under it: an ERROR line and a
    new child that imports Keras again while the worker shuts down). Then, as for the MLflow
    server, the group: SIGTERM, SIGKILL for what is left."""
    if isinstance(child, WorkerProcess) and child.alive():
        child.proc.terminate()
        try:
            child.proc.wait(timeout=WORKER_WARM_STOP_S)
        except subprocess.TimeoutExpired:  # a training still running: the group goes below
            pass
    child.stop(timeout=20)


def say(text: str) -> None:
    """Print, unless stdout is gone: Ctrl-C also ends a `| tee` or pager in the terminal's
    process group, and a BrokenPipeError must not stop the shutdown before the children."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def urls(base: str, mlflow_ui: str) -> str:
    return (f"kerasyard API:  {base}/api/v1   (docs: {base}/api/v1/docs)\n"
            f"MLflow UI:      {mlflow_ui}")


class EndedWatcher(threading.Thread):
    """Prints a line for each job (not a sweep's trial) and sweep that ends, with its MLflow
    link, then ``footer`` (the URLs), so they are on screen after the worker's log."""

    def __init__(self, settings: Settings, footer: str, interval: float = WATCH_INTERVAL_S):
        super().__init__(name="ended-watcher", daemon=True)
        self.settings, self.footer, self.interval = settings, footer, interval
        self.halt = threading.Event()
        # Watermarks from the database's own clock: what ended before we started is not news.
        self.marks = {kind: self._latest(kind) for kind in ("job", "sweep")}

    def _model(self, kind: str):
        from service.store.models import Job, Sweep

        return Job if kind == "job" else Sweep

    def _latest(self, kind: str):
        from sqlalchemy import func, select

        from service.store.db import session_scope

        model = self._model(kind)
        with session_scope(self.settings.database_url) as s:
            return s.scalar(select(func.max(model.finished_at)))

    def ended(self) -> list[str]:
        """Lines for what ended since the last call."""
        from sqlalchemy import select

        from service.jobs import mlflow_ref
        from service.store.db import session_scope

        lines = []
        for kind in ("job", "sweep"):
            model = self._model(kind)
            query = select(model).where(model.finished_at.is_not(None))
            if kind == "job":
                query = query.where(model.sweep_id.is_(None))  # a sweep says it once, at its end
            if self.marks[kind] is not None:
                query = query.where(model.finished_at > self.marks[kind])
            with session_scope(self.settings.database_url) as s:
                for row in s.scalars(query.order_by(model.finished_at)).all():
                    self.marks[kind] = row.finished_at
                    link = mlflow_ref(self.settings, row.mlflow_experiment_id,
                                      row.mlflow_run_id)["url"]
                    status = getattr(row.status, "value", row.status)
                    lines.append(f"{kind} {row.name!r} ({row.id}) {status}"
                                 + (f": {link}" if link else ""))
        return lines

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                lines = self.ended()
            except Exception as exc:  # a locked SQLite file, a database restart: try again
                lines = []
                say(f"(could not read finished jobs: {type(exc).__name__}: {exc})")
            if lines:
                say("\n".join([*lines, self.footer]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("KERASYARD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("KERASYARD_PORT", "8000")))
    parser.add_argument("--mlflow-port", type=int,
                        default=int(os.environ.get("KERASYARD_MLFLOW_PORT", "5050")))
    parser.add_argument("--no-worker", action="store_true", help="run the API only")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every HTTP request the API serves")
    return parser.parse_args(argv)


def start_mlflow(env: dict, port: int) -> MlflowServer:
    """The local MLflow server (SQLite and artifacts under the data dir)."""
    data_dir = Path(env.get("KERASYARD_DATA_DIR", ".kerasyard")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "mlflow-server.log"
    print(f"starting MLflow server on http://127.0.0.1:{port} (log: {log_path})", flush=True)
    # Each child in a session of its own: a Ctrl-C in the terminal reaches this process only,
    # which stops the worker first (its training can still report), then MLflow; and
    # Process.stop can take each child's own children (pool, server workers) down. Killed
    # outright (kill -9), this process cannot stop them: the kernel sends each child SIGTERM
    # instead (parent_death_signal), the worker's warm shutdown and the MLflow server's own, so
    # none is left holding its port.
    return MlflowServer(data_dir, port=port, env=env, log_path=log_path, append=True,
                        new_session=True, parent_death_signal=signal.SIGTERM)


def serve(args: argparse.Namespace, env: dict, children: list[Process],
          watchers: list[EndedWatcher]) -> None:
    """Migrations, the worker, then the API in the foreground until a signal stops it. What
    it starts is appended to ``children`` and ``watchers``, for the caller to stop."""
    if "MLFLOW_TRACKING_URI" not in env:
        mlflow = start_mlflow(env, args.mlflow_port)
        children.append(mlflow)
        env["MLFLOW_TRACKING_URI"] = mlflow.url
    os.environ.update(env)
    settings = Settings.from_env()

    from service.migrate import upgrade

    upgrade(settings.database_url)
    if not args.no_worker:  # its log goes to this terminal
        children.append(WorkerProcess(env, log_path=None, name="embedded@%h", cwd=os.getcwd(),
                                      new_session=True, parent_death_signal=signal.SIGTERM))

    from service.api import create_app

    app = create_app(settings, redispatch_interval=settings.redispatch_interval_s)
    server = ApiServer(app, args.host, args.port, quiet=not args.verbose)
    base = server.url
    footer = urls(base, settings.mlflow_ui_url)
    print(footer, flush=True)
    print(f"submit a job:   curl -X POST {base}/api/v1/jobs -H 'Content-Type: "
          "application/json' -d @examples/lecture_mlp.json", flush=True)
    print("Ctrl-C stops everything" + ("" if args.verbose else "; -v logs every request"),
          flush=True)
    watchers.append(EndedWatcher(settings, footer))
    watchers[-1].start()
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = os.environ.copy()
    # The worker's MLflow client writes "View run ... / View experiment ..." to stdout at the
    # end of each run, which Celery logs as two WARNING lines; the run command prints the
    # job's link itself (EndedWatcher).
    env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    children: list[Process] = []
    watchers: list[EndedWatcher] = []
    stopping = threading.Event()

    def on_signal(signum, _frame):
        if stopping.is_set():  # a second Ctrl-C while the children stop: let them finish
            return
        stopping.set()
        raise SystemExit(0)

    # SIGINT explicitly, not only Python's default: a command started in the background from
    # a script (`python -m devstack.run &`) inherits SIGINT *ignored* from the non-interactive
    # shell, and Python would then install no KeyboardInterrupt handler.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve(args, env, children, watchers)
    except StackError as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(1) from None
    finally:
        stopping.set()
        for watcher in watchers:
            watcher.halt.set()
        if children:
            say("stopping the worker and the MLflow server ...")
        for child in reversed(children):
            try:
                stop_child(child)
            except Exception as exc:  # stop the others all the same
                say(f"could not stop {child.name}: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
