"""Reading docker-compose.yml and .env.example for the tests, the way docker-compose does."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
WORKER_HOST_FILE = ROOT / "deploy" / "compose.worker-host.yml"
ENV_EXAMPLE = ROOT / ".env.example"
CONFIG_PY = ROOT / "service" / "config.py"

# What .env.example leaves empty for the operator to fill in; docker-compose must refuse to
# interpolate the file without the passwords.
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "test-pg-password",
    "REDIS_PASSWORD": "test-redis-password",
    "FLOWER_BASIC_AUTH": "admin:test-flower-password",
    "KERASYARD_API_TOKEN": "test-api-token-0123456789",
    "MLFLOW_ADMIN_PASSWORD": "test-mlflow-admin-password",
    "MLFLOW_WORKER_PASSWORD": "test-mlflow-worker-password",
    "MLFLOW_FLASK_SECRET_KEY": "test-mlflow-flask-secret-key",
}

_ASSIGNMENT = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def docker_compose() -> str:
    """The docker-compose executable; fails under CI and skips elsewhere when it is missing."""
    exe = shutil.which("docker-compose")
    if exe:
        return exe
    message = ("docker-compose is not installed, so docker-compose.yml cannot be checked; "
               "install it with `apt-get install -y docker-compose` (Debian's package; .ci/run "
               "installs it when apt-get works)")
    if os.environ.get("CI") or os.environ.get("KERASYARD_REQUIRE_DOCKER_COMPOSE"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def env_example() -> tuple[dict[str, str], set[str]]:
    """.env.example's active assignments, and every variable it documents (commented or not)."""
    active: dict[str, str] = {}
    documented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            documented.add(match.group(2))
            if not match.group(1):
                active[match.group(2)] = match.group(3)
    return active, documented


def config_env_names() -> set[str]:
    """Every environment variable service/config.py reads (os.environ.get / _env_* calls)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(CONFIG_PY.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = ast.unparse(node.func)
        first = node.args[0]
        if (func in ("os.environ.get", "os.getenv") or func.startswith("_env")) \
                and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    for node in ast.walk(ast.parse(CONFIG_PY.read_text())):  # os.environ["NAME"]
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            names.add(node.slice.value)
    return names


def interpolated_names(path: Path) -> set[str]:
    """Variables a compose file interpolates (``${NAME}``, ``${NAME:-x}``, ``${NAME:?msg}``...)."""
    text = path.read_text().replace("$$", "")
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def raw_compose(path: Path = COMPOSE_FILE) -> dict:
    """The file as YAML (anchors and merge keys resolved, ``${...}`` left as written)."""
    return yaml.safe_load(path.read_text())


def run_compose(args: list[str], env: dict[str, str], files=(COMPOSE_FILE,),
                env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    """docker-compose with only ``env`` in its environment (so the caller's shell cannot leak in).

    Relative paths in the files (build contexts, bind mounts) resolve against the repository.
    """
    cmd = [docker_compose(), "--env-file", str(env_file), "--project-directory", str(ROOT)]
    for path in files:
        cmd += ["-f", str(path)]
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(cmd + args, cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=120, check=False)


def compose_config(env: dict[str, str], files=(COMPOSE_FILE,)) -> dict:
    """``docker-compose config``: the file as Compose itself resolves and interpolates it."""
    result = run_compose(["config"], env, files)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def option(command: list[str], *names: str) -> str | None:
    """The value of a command-line option (``--opt value`` or ``--opt=value``) in ``command``."""
    for i, arg in enumerate(command):
        for name in names:
            if arg == name and i + 1 < len(command):
                return command[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def gpu_reservation_problems(doc: dict) -> list[str]:
    """What is wrong with the GPU reservations of a compose document; empty when nothing.

    A device reservation must name ``capabilities`` (Docker picks devices by capability; without
    ``gpu`` no GPU is handed to the container), and may give ``count`` or ``device_ids`` but never
    both (Compose rejects the pair).
    """
    problems = []
    for name, service in (doc.get("services") or {}).items():
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations")
                   or {}).get("devices") or []
        for i, device in enumerate(devices):
            where = f"services.{name}.deploy.resources.reservations.devices[{i}]"
            caps = device.get("capabilities")
            if not caps:
                problems.append(f"{where} has no capabilities")
            elif device.get("driver") == "nvidia" and "gpu" not in caps:
                problems.append(f"{where}: nvidia device without the gpu capability ({caps})")
            if "count" in device and "device_ids" in device:
                problems.append(f"{where} has both count and device_ids")
    return problems


def run_instructions(dockerfile: Path) -> list[str]:
    """A Dockerfile's RUN instructions, continuation lines joined."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            lines.append(current)
            current = ""
    return [line[4:].strip() for line in lines if line.startswith("RUN ")]


def shell_commands(run: str) -> list[str]:
    """The simple commands of a RUN line (split on ``&&``, ``||``, ``;``)."""
    return [part.strip() for part in re.split(r"&&|\|\||;", run) if part.strip()]


# --- checks that keep `docker compose up` working on a fresh machine: each returns what is wrong
# (empty when nothing). tests/unit/test_compose_file.py runs each on the files as they are, and on
# a small example of the mistake it is for, which it must report.

def dockerfile_arg_scope_problems(text: str) -> list[str]:
    """ARGs declared before the first FROM but used after it without being declared again: they
    expand to the empty string there (Docker scopes a pre-FROM ARG to the FROM lines)."""
    problems, before, declared, stage = [], set(), set(), 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            stage += 1
            declared = set()
            continue
        if word == "ARG":
            name = line.split(None, 1)[1].split("=", 1)[0].strip()
            (before if stage == 0 else declared).add(name)
            continue
        if stage:
            for name in sorted(before - declared):
                if re.search(rf"\$\{{?{name}\b", line):
                    problems.append(f"ARG {name} is used after FROM without `ARG {name}` there: "
                                    f"{line[:80]}")
    return problems


def shared_build_tag_problems(doc: dict) -> list[str]:
    """Services that build an image under the same tag: Compose builds them in parallel (bake)
    and the second export can fail with 'image ... already exists'."""
    tags: dict[str, str] = {}
    problems = []
    for name, service in (doc.get("services") or {}).items():
        if "build" not in service:
            continue
        tag = service.get("image")
        if tag is None:
            continue
        if tag in tags:
            problems.append(f"services {tags[tag]} and {name} both build {tag}")
        else:
            tags[tag] = name
    return problems


def postgres_healthcheck_problems(test: list[str]) -> list[str]:
    """pg_isready must go over TCP: the postgres image's first-time init runs a temporary server
    on the unix socket only, which a socket check calls ready."""
    command = " ".join(test)
    if "pg_isready" not in command:
        return ["the healthcheck does not run pg_isready"]
    if not re.search(r"(-h|--host)[ =](127\.0\.0\.1|localhost)\b", command):
        return [("pg_isready checks the unix socket (no -h 127.0.0.1): it passes during the "
                 "image's first-time init, whose server takes no TCP connections")]
    return []


def redis_privilege_problems(service: dict) -> list[str]:
    """The redis image's entrypoint drops root only when the command starts with redis-server."""
    user = str(service.get("user") or "")
    if user and user not in ("0", "root") and not user.startswith(("0:", "root:")):
        return []
    command = service.get("command") or []
    command = command.split() if isinstance(command, str) else command
    if not command or command[0] != "redis-server":
        return [(f"redis runs as root: its command starts with {command[:1]}, not "
                 "redis-server, and no non-root user is set")]
    return []


# major.minor.patch; PostgreSQL's releases are major.minor (16.6).
_VERSION_TAG = re.compile(r":v?\d+\.\d+\.\d+(-[A-Za-z0-9.]+)?$")
_POSTGRES_TAG = re.compile(r"^postgres:\d+\.\d+(-[A-Za-z0-9.]+)?$")


def unpinned_image_problems(doc: dict) -> list[str]:
    """Images pulled from a registry must name a release (postgres:16.6-alpine), not a moving
    major tag (postgres:16-alpine, redis:7-alpine, mher/flower:2.0 where 2.0.1 exists...)."""
    problems = []
    for name, service in (doc.get("services") or {}).items():
        image = service.get("image")
        if image and "build" not in service and not (_VERSION_TAG.search(image)
                                                     or _POSTGRES_TAG.match(image)):
            problems.append(f"services.{name}.image {image!r} names no release")
    return problems


def quickstart_problems(text: str) -> list[str]:
    """The quick start must name every variable a browser on another machine needs."""
    return [f"the quick start does not name {name}"
            for name in ("MLFLOW_UI_URL", "MLFLOW_PUBLIC_HOSTS") if name not in text]
