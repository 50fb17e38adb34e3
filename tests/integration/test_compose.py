"""docker-compose.yml run for real, without Docker: preflight, migrate, mlflow (behind MLflow's
basic-auth app, started by deploy/mlflow/serve.py), mlflow-init, api and worker-cpu started as
local processes from the `command` and
`environment` Compose resolves for them, against this machine's PostgreSQL and Redis. Only host
names, ports and paths are rewritten (postgres, redis and mlflow become loopback; the artifacts
volume and scratch dir become temporary folders), so a compose file that drifts from the code (a
wrong module, flag or variable) fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from devstack import Process, free_port
from tests.compose_support import TEST_SECRETS, compose_config
from tests.helpers import ROOT, ended_run, tiny_spec, wait_for

from .conftest import PG_ADMIN, REDIS_URL, _create_database, _drop_database

pytestmark = pytest.mark.integration

# Its own Redis db: the session worker of the other integration tests listens on REDIS_URL's
# queues and would take (and drop, not knowing the id) this test's job.
COMPOSE_REDIS = os.environ.get("KERASYARD_TEST_COMPOSE_REDIS", "redis://127.0.0.1:6379/11")
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "initdb" / "10-create-mlflow-database.sh"
# What deploy/mlflow.Dockerfile copies to /etc/mlflow in the MLflow image.
MLFLOW_ETC = ROOT / "deploy" / "mlflow"
# Settings the images or the compose file would give; never inherited from the caller's shell.
_SCRUB = re.compile(r"^(DATABASE_URL|BROKER_URL|MLFLOW_|KERASYARD_|KERAS_BACKEND|TF_|CELERY_)")


def http(method: str, url: str, body: dict | None = None, token: str | None = None,
         headers: dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Rewriter:
    """Rewrites the container-network names, ports and paths of one service; counts each rule's
    hits so a rule that stopped matching the compose file is a failure, not a silent no-op."""

    def __init__(self, rules: list[tuple[str, str]]):
        self.rules = [(re.compile(p), r) for p, r in rules]
        self.hits = {p: 0 for p, _ in rules}

    def __call__(self, value: str) -> str:
        for pattern, repl in self.rules:
            value, n = pattern.subn(repl, value)
            self.hits[pattern.pattern] += n
        return value

    def unused(self) -> list[str]:
        return [p for p, n in self.hits.items() if n == 0]


def local_command(command: list[str], rewrite: Rewriter) -> list[str]:
    """The container's argv with its executable replaced by this venv's interpreter."""
    exe, *args = command
    if exe == "python":
        head = [sys.executable]
    elif exe in ("gunicorn", "celery", "mlflow"):
        head = [sys.executable, "-m", exe]
    else:
        raise AssertionError(f"no local stand-in for the executable {exe!r} of {command}")
    return head + [rewrite(a) for a in args]


def local_env(environment: dict, rewrite: Rewriter, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not _SCRUB.match(k)}
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")  # the images' ENV
    for key, value in (environment or {}).items():
        if value is not None:  # pass-through variables that .env leaves unset stay unset
            env[key] = rewrite(str(value))
    env.update(extra)
    return env


def start_service(name: str, argv: list[str], env: dict, logdir: Path) -> Process:
    """One compose service as a local process in a session of its own (stop() takes down the
    whole group: gunicorn's and the prefork pool's children too)."""
    return Process(name, argv, env=env, log_path=logdir / f"{name}.log", cwd=ROOT,
                   new_session=True)


# The API image (deploy/api.Dockerfile) has pyproject.toml's base dependencies only: none of the
# worker extra's frameworks. Its processes here get a sitecustomize that makes importing them
# fail, as it would in the image (numpy stays: optuna, a base dependency, brings it).
NOT_IN_API_IMAGE = ("tensorflow", "keras", "mlflow", "sklearn", "matplotlib", "jax", "torch")
_SITECUSTOMIZE = f"""
import importlib.abc, sys

class _NotInApiImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {NOT_IN_API_IMAGE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the API image)",
                                      name=name)
        return None

sys.meta_path.insert(0, _NotInApiImage())
"""


def api_image_pythonpath(tmp_path: Path) -> str:
    folder = tmp_path / "api-image-site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return str(folder)


def basic_auth(user: str, password: str) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def create_mlflow_database(name: str) -> None:
    """deploy/postgres/initdb's script, run the way the postgres image runs it."""
    admin = urllib.parse.urlparse(PG_ADMIN)
    env = {**os.environ, "PGHOST": admin.hostname or "127.0.0.1", "PGPORT": str(admin.port or 5432),
           "POSTGRES_USER": admin.username or "postgres",
           "POSTGRES_DB": admin.path.lstrip("/") or "postgres", "MLFLOW_POSTGRES_DB": name}
    result = subprocess.run(["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"{INIT_SCRIPT.name} failed:\n{result.stdout}{result.stderr}"


def test_compose_services_run_as_local_processes_and_train_a_job(tmp_path, request):
    sharing = [item.nodeid for item in request.session.items
               if "worker" in getattr(item, "fixturenames", ())]
    if COMPOSE_REDIS == REDIS_URL and sharing:
        pytest.fail("KERASYARD_TEST_COMPOSE_REDIS must name another Redis db than "
                    "KERASYARD_TEST_REDIS in this run: the session worker of "
                    f"{sharing[0]} and others would take this test's job", pytrace=False)
    admin = urllib.parse.urlparse(PG_ADMIN)
    pg_host, pg_port = admin.hostname or "127.0.0.1", admin.port or 5432
    suffix = uuid.uuid4().hex[:8]
    jobs_db, mlflow_db = f"kerasyard_compose_{suffix}", f"mlflow_compose_{suffix}"
    _create_database(jobs_db)
    broker = redis.Redis.from_url(COMPOSE_REDIS)
    broker.flushdb()
    services: list[Process] = []
    t0 = time.monotonic()
    try:
        create_mlflow_database(mlflow_db)
        mlflow_port, api_port = free_port(), free_port()
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        artifacts, scratch = tmp_path / "mlartifacts", tmp_path / "scratch"
        token = TEST_SECRETS["KERASYARD_API_TOKEN"]
        # What an operator's .env would say; one process each where the file allows a number.
        # MLflow's CORS origins as people write them: a list, with trailing slashes.
        resolved = compose_config({**TEST_SECRETS, "POSTGRES_USER": admin.username or "postgres",
                                   "POSTGRES_DB": jobs_db, "MLFLOW_POSTGRES_DB": mlflow_db,
                                   "API_WORKERS": "1", "MLFLOW_WORKERS": "1",
                                   "WORKER_CPU_CONCURRENCY": "1",
                                   "MLFLOW_CORS_ORIGINS": "https://ui.example.com/, "
                                                          "http://10.0.0.5:5000/"})["services"]
        # The basic-auth config as baked into the image, its auth database moved off /mlauth.
        auth_ini = tmp_path / "basic_auth.ini"
        ini_text = (MLFLOW_ETC / "basic_auth.ini").read_text()
        assert "sqlite:////mlauth/" in ini_text
        auth_ini.write_text(ini_text.replace("sqlite:////mlauth/", f"sqlite:///{tmp_path}/"))
        rewrite = Rewriter([
            (r"^/etc/mlflow/basic_auth\.ini$", str(auth_ini)),
            (r"^/etc/mlflow/create_users\.py$", str(MLFLOW_ETC / "create_users.py")),
            (r"^/etc/mlflow/serve\.py$", str(MLFLOW_ETC / "serve.py")),
            (r"^/etc/mlflow/preflight\.py$", str(MLFLOW_ETC / "preflight.py")),
            (r"@postgres:5432/", f"@{pg_host}:{pg_port}/"),
            # Local Redis has no password: the URL's credentials go with its host.
            (r"redis://:[^@/]*@redis:6379/0", COMPOSE_REDIS),
            (r"^http://mlflow:5000$", mlflow_url),
            (r"^0\.0\.0\.0:8000$", f"127.0.0.1:{api_port}"),
            (r"^0\.0\.0\.0$", "127.0.0.1"),
            (r"^/mlartifacts$", str(artifacts)),
            (r"^/tmp/kerasyard$", str(scratch)),
        ])

        # preflight: first; the settings above pass it.
        pre = resolved["preflight"]
        preflight = subprocess.run(local_command(pre["command"], rewrite), cwd=ROOT,
                                   env=local_env(pre["environment"], rewrite),
                                   capture_output=True, text=True, timeout=60, check=False)
        assert preflight.returncode == 0, f"preflight failed:\n{preflight.stderr}"
        assert "MLflow accepts browser requests from https://ui.example.com, " \
            "http://10.0.0.5:5000" in preflight.stdout, preflight.stdout

        # mlflow: its --port too (the one rule that is not a host name or path).
        ml = resolved["mlflow"]
        ml_cmd = list(ml["command"])
        ml_cmd[ml_cmd.index("--port") + 1] = str(mlflow_port)
        services.append(start_service("mlflow", local_command(ml_cmd, rewrite),
                                local_env(ml.get("environment"), rewrite), tmp_path))

        # migrate: one-shot; the API and the worker start only once it has succeeded.
        api_site = api_image_pythonpath(tmp_path)
        probe = subprocess.run([sys.executable, "-c", "import mlflow"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": api_site},
                               check=False)
        assert "not in the API image" in probe.stderr, probe.stderr  # the blocker works
        mig = resolved["migrate"]
        migrate = subprocess.run(local_command(mig["command"], rewrite), cwd=ROOT,
                                 env=local_env(mig["environment"], rewrite, PYTHONPATH=api_site),
                                 capture_output=True, text=True, timeout=180, check=False)
        assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}{migrate.stderr}"

        # mlflow-init: the workers' MLflow user, through the auth REST API, once MLflow is up.
        ini = resolved["mlflow-init"]
        init = subprocess.run(local_command(ini["command"], rewrite), cwd=ROOT,
                              env=local_env(ini["environment"], rewrite), capture_output=True,
                              text=True, timeout=300, check=False)
        assert init.returncode == 0, f"mlflow-init failed:\n{init.stdout}{init.stderr}"
        worker_user = ini["environment"]["MLFLOW_WORKER_USERNAME"]
        assert f"MLflow user {worker_user!r} created" in init.stdout, init.stdout

        wk = resolved["worker-cpu"]
        worker = start_service("worker-cpu", local_command(wk["command"], rewrite),
                         local_env(wk["environment"], rewrite), tmp_path)
        services.append(worker)
        api_def = resolved["api"]
        api = start_service("api", local_command(api_def["command"], rewrite),
                      local_env(api_def["environment"], rewrite, PYTHONPATH=api_site), tmp_path)
        services.append(api)

        # Every rewrite rule met its target, and nothing still names a container host.
        assert rewrite.unused() == [], f"rules that matched nothing: {rewrite.unused()}"
        for svc in services:
            leftovers = [a for a in svc.argv if re.search(r"@(postgres|redis):|//mlflow:", a)]
            assert not leftovers, (svc.name, leftovers)

        base = f"http://127.0.0.1:{api_port}/api/v1"

        def healthy():
            for svc in services:
                svc.check_alive()
            try:
                return http("GET", f"{base}/health")[0] == 200
            except OSError:
                return False

        wait_for(healthy, 120, 0.5, "the api (gunicorn) to report database, broker and MLflow up")

        # KERASYARD_API_TOKEN from the compose environment reaches the API.
        status, body = http("POST", f"{base}/jobs", tiny_spec("compose"))
        assert status == 401, body
        status, job = http("POST", f"{base}/jobs", tiny_spec("compose"), token=token)
        assert status == 202, job

        def finished():
            worker.check_alive()
            _, current = http("GET", f"{base}/jobs/{job['id']}", token=token)
            return current if current["status"] in ("succeeded", "failed", "cancelled") else None

        done = wait_for(finished, 150, 0.3, "the job to finish on worker-cpu")
        assert "not in the API image" not in api.text(), api.text()[-3000:]
        assert done["status"] == "succeeded", (done["error"], worker.text()[-3000:])
        assert done["mlflow"]["url"].startswith(api_def["environment"]["MLFLOW_UI_URL"])

        # MLflow answers nobody without a user: 401 to an anonymous call, 401 to a wrong
        # password; /health stays public (the API's health check and compose's use it).
        search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http("GET", search)[0] == 401
        wenv = wk["environment"]
        login = wenv["MLFLOW_TRACKING_USERNAME"], wenv["MLFLOW_TRACKING_PASSWORD"]
        assert login[0] == worker_user and login[0] != resolved["mlflow"]["environment"][
            "MLFLOW_AUTH_ADMIN_USERNAME"]
        assert http("GET", search, headers=basic_auth(login[0], "wrong"))[0] == 401
        assert http("GET", f"{mlflow_url}/health")[0] == 200
        # The API has no MLflow login and needs none.
        assert "MLFLOW_TRACKING_PASSWORD" not in api_def["environment"]

        # The run is in the MLflow server started from the compose file, logged by the worker
        # with its own user, with its artifacts on the artifacts "volume", and its metadata in
        # the PostgreSQL database MLflow was given.
        from mlflow.tracking import MlflowClient

        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME",
                                                "MLFLOW_TRACKING_PASSWORD")}
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = login
        request.addfinalizer(lambda: [os.environ.pop(k, None) if v is None else
                                      os.environ.__setitem__(k, v) for k, v in saved.items()])
        client = MlflowClient(mlflow_url)
        run = ended_run(client, done["mlflow"]["run_id"])
        # (The worker logged all of it with its own user: anonymous calls get 401 above.)
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
        assert "spec.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert list(artifacts.rglob("spec.json")), \
            "the artifacts did not land in --artifacts-destination"
        admin_base = PG_ADMIN.rsplit("/", 1)[0]
        with psycopg.connect(f"{admin_base}/{mlflow_db}") as conn:
            assert conn.execute("SELECT status FROM runs WHERE run_uuid = %s",
                                (run.info.run_id,)).fetchone() == ("FINISHED",)
        with psycopg.connect(f"{admin_base}/{jobs_db}") as conn:
            assert conn.execute("SELECT status FROM jobs WHERE id = %s",
                                (done["id"],)).fetchone() == ("succeeded",)

        # --allowed-hosts: the compose service name (how workers and the API reach MLflow) is
        # let in; an unknown host is not.
        auth = basic_auth(*login)
        assert http("GET", search, headers={"Host": "mlflow:5000", **auth})[0] == 200
        assert http("GET", search, headers={"Host": "mlflow", **auth})[0] == 200
        assert http("GET", search, headers={"Host": "attacker.example", **auth})[0] == 403

        # CORS: serve.py gave MLflow the listed origins without their trailing slashes, so a
        # browser's request from each (an Origin has no slash) is let through; another is not.
        search_post = f"{mlflow_url}/api/2.0/mlflow/experiments/search"
        for origin, status in (("https://ui.example.com", 200), ("http://10.0.0.5:5000", 200),
                               ("https://attacker.example", 403)):
            got = http("POST", search_post, {"max_results": 1},
                       headers={"Origin": origin, **auth})[0]
            assert got == status, (origin, got)

        # No service logged a password (the start logs and the job's).
        secrets = [v for k, v in TEST_SECRETS.items() if k != "FLOWER_BASIC_AUTH"]
        secrets.append(TEST_SECRETS["FLOWER_BASIC_AUTH"].split(":", 1)[1])
        for svc in services:
            leaked = [v for v in secrets if v in svc.text()]
            assert not leaked, f"{svc.name} logged {leaked}"
        for name, out in (("migrate", migrate.stdout + migrate.stderr),
                          ("mlflow-init", init.stdout + init.stderr),
                          ("preflight", preflight.stdout + preflight.stderr)):
            assert not [v for v in secrets if v in out], name
        print(f"compose stack: job succeeded {time.monotonic() - t0:.1f} s after setup began")
    finally:
        for svc in reversed(services):
            svc.stop()
        broker.flushdb()
        from service.store.db import dispose_engines

        dispose_engines()
        _drop_database(jobs_db)
        _drop_database(mlflow_db)
