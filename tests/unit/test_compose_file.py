"""docker-compose.yml, the Dockerfiles and .env.example, checked without a Docker engine.

Compose's own reading of the file comes from Debian's docker-compose (`docker-compose config`);
the rest reads the YAML and the Dockerfiles. tests/integration/test_compose.py runs the services'
commands for real.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from service.devstack import mlflow_server_env
from tests.compose_support import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    TEST_SECRETS,
    WORKER_HOST_FILE,
    compose_config,
    config_env_names,
    env_example,
    gpu_reservation_problems,
    interpolated_names,
    option,
    raw_compose,
    run_compose,
    run_instructions,
    shell_commands,
)
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
SERVICES = {"postgres", "redis", "mlflow", "migrate", "api", "worker-gpu", "worker-cpu", "flower"}
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
    for name in ("worker-gpu", "worker-cpu"):
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
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("tensorflow/tensorflow:")
    assert gpu["build"]["args"]["BASE_IMAGE"].endswith("-gpu")
    assert gpu["build"]["args"]["TENSORFLOW_FROM_BASE"] == "1"


def test_cpu_worker_takes_the_cpu_queue_on_the_worker_extra(resolved):
    cpu = resolved["services"]["worker-cpu"]
    assert option(cpu["command"], "-Q", "--queues") == "cpu"
    assert option(cpu["command"], "-P", "--pool") == "prefork"
    assert cpu["build"]["args"]["TENSORFLOW_FROM_BASE"] == "0"
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
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_mlflow_server_on_postgresql_with_proxied_artifacts_and_allowed_hosts(resolved):
    mlflow = resolved["services"]["mlflow"]
    cmd, env = mlflow["command"], mlflow["environment"]
    assert cmd[:2] == ["mlflow", "server"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/mlflow" in env["MLFLOW_BACKEND_STORE_URI"]
    artifacts = option(cmd, "--artifacts-destination")
    mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in mlflow["volumes"]]
    assert artifacts in mounts, (artifacts, mounts)
    assert "--serve-artifacts" in cmd
    hosts = option(cmd, "--allowed-hosts").split(",")
    for host in ("mlflow", "mlflow:*", "localhost", "localhost:*"):
        assert host in hosts, host
    assert any(str(p.get("target", p)).endswith("5000") for p in mlflow["ports"])
    # The same MLflow environment as the dev stack (service/devstack.py, used by `make run`).
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


def test_readme_extra_gpu_service_snippet_fits_the_compose_file(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Scaling out", 1)[1]
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
    assert not gpu & {"tensorflow", "tensorflow-cpu"}, "the GPU base image's TensorFlow stays"
    cpu = requirement_names(["--extra", "worker"])
    assert "tensorflow-cpu" in cpu
    text = " ".join(run_instructions(DEPLOY / "worker.Dockerfile"))
    assert "--without tensorflow --without tensorflow-cpu" in text
    assert "--extra worker" in text


def test_mlflow_image_takes_the_worker_extras_mlflow_range():
    runs = " ".join(run_instructions(DEPLOY / "mlflow.Dockerfile"))
    assert "requirements.py --extra worker" in runs and "^mlflow" in runs
    assert "psycopg" in runs  # the backend store URI is postgresql+psycopg://


def test_requirements_script_rejects_an_unknown_extra():
    result = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"), "--extra", "nope"],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "no extra 'nope'" in result.stderr
