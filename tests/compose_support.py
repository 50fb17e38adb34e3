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
    "KERASYARD_API_TOKEN": "test-api-token",
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
