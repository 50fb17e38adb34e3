"""Check the stack's settings before anything starts: `preflight` in docker-compose.yml.

    python /etc/mlflow/preflight.py

Runs once, before migrate, mlflow and flower (they wait for it to succeed), so a setting that
MLflow or Flower would reject, or that would break a URL, stops `docker compose up` with one
message per problem, each naming the variable, what is wrong with its value and the fix. A
secret's value is never printed: only its length or the kind of character at fault.

    MLFLOW_ADMIN_PASSWORD, MLFLOW_WORKER_PASSWORD   MLflow's basic-auth refuses a password under
                                 12 characters (mlflow.utils.validation._validate_password) and
                                 the old default password1234; mlflow-init would fail late
    FLOWER_BASIC_AUTH            user:password (several separated by commas; Flower splits the
                                 value on commas), a user without ':', a password of 12 or more
    MLFLOW_CORS_ORIGINS          origins the MLflow UI accepts state-changing requests from, a
                                 comma-separated list (default: MLFLOW_UI_URL); each is reduced to
                                 scheme://host[:port], trailing slashes and paths dropped, as a
                                 browser sends it in its Origin header
    MLFLOW_UI_URL                an http(s) URL
    KERASYARD_API_TOKEN          at least 16 characters (the API refuses to start otherwise)
    POSTGRES_PASSWORD, REDIS_PASSWORD   URL-safe characters only: compose writes them into
                                 DATABASE_URL and BROKER_URL
    API_PORT, FLOWER_PORT, MLFLOW_PORT  no longer read: API_PUBLISH, FLOWER_PUBLISH and
                                 MLFLOW_PUBLISH (ip:port, 127.0.0.1 by default) replaced them

Standard library only: it runs in the MLflow image (deploy/mlflow.Dockerfile copies this folder
to /etc/mlflow), where serve.py uses :func:`mlflow_cors_origins` too, and in the tests.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import urlsplit

# MLflow 3's basic-auth password policy (mlflow/utils/validation.py, _validate_password).
MLFLOW_MIN_PASSWORD = 12
# The default admin password of older MLflow releases, which MLflow now refuses.
MLFLOW_REFUSED_PASSWORD = "password1234"
FLOWER_MIN_PASSWORD = 12
# service/config.py MIN_API_TOKEN_LENGTH: the API refuses a shorter KERASYARD_API_TOKEN.
API_TOKEN_MIN = 16
# RFC 3986 unreserved characters: safe anywhere in a URL without escaping.
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
GENERATE = "e.g. `openssl rand -hex 24`"
# Variables compose no longer reads, and what replaced them.
REPLACED = {"API_PORT": "API_PUBLISH=127.0.0.1:8000",
            "FLOWER_PORT": "FLOWER_PUBLISH=127.0.0.1:5555",
            "MLFLOW_PORT": "MLFLOW_PUBLISH=127.0.0.1:5000"}


def mlflow_password_problem(name: str, value: str | None) -> str | None:
    """What MLflow's basic-auth would refuse in the password ``value`` of variable ``name``."""
    if not value:
        return f"{name} is empty: set it in .env ({GENERATE})"
    if len(value) < MLFLOW_MIN_PASSWORD:
        return (f"{name} is {len(value)} characters long; MLflow's basic-auth refuses passwords "
                f"under {MLFLOW_MIN_PASSWORD} characters: set a longer one in .env ({GENERATE})")
    if value == MLFLOW_REFUSED_PASSWORD:
        return (f"{name} is the default password of older MLflow releases, which MLflow refuses: "
                f"set another in .env ({GENERATE})")
    return None


def flower_auth_problems(value: str | None, name: str = "FLOWER_BASIC_AUTH") -> list[str]:
    """What is wrong with Flower's ``user:password[,user:password...]`` login setting."""
    form = (f"Flower expects user:password, e.g. admin:<{GENERATE.removeprefix('e.g. ')}>, "
            "several separated by commas (so no comma inside a password)")
    if not value:
        return [f"{name} is empty: {form}"]
    entries = value.split(",")
    problems = []
    for number, entry in enumerate(entries, 1):
        where = f"{name} (entry {number} of {len(entries)})" if len(entries) > 1 else name
        user, colon, password = entry.partition(":")
        if entry != entry.strip():
            problems.append(f"{where} has spaces around it, which Flower would take as part of "
                            "the login: remove them")
        elif not colon:
            problems.append(f"{where} has no ':' between user and password: {form}")
        elif not user:
            problems.append(f"{where} has an empty user before ':': {form}")
        elif not password:
            problems.append(f"{where} has an empty password after ':': {form}")
        elif len(password) < FLOWER_MIN_PASSWORD:
            problems.append(f"{where}: the password is {len(password)} characters long; use at "
                            f"least {FLOWER_MIN_PASSWORD} ({GENERATE})")
    return problems


def origin(value: str) -> str:
    """``value`` as a browser's Origin: ``scheme://host[:port]``, lower case, without a default
    port, trailing slashes or a path (``https://MLflow.example.com:443/ui/`` ->
    ``https://mlflow.example.com``). ``*`` (any origin) and ``*`` inside a host stay as they are.

    Raises:
        ValueError: not an http(s) URL with a host.
    """
    text = value.strip()
    if text == "*":
        return text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin: write scheme://host[:port], e.g. "
                         "https://mlflow.example.com or http://10.0.0.5:5000")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a port that is not a number") from None
    return f"{scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[scheme] else "")


def cors_origins(value: str, name: str) -> tuple[list[str], list[str]]:
    """The origins of a comma-separated list (each through :func:`origin`, duplicates and empty
    items dropped) and the problems, each naming ``name``."""
    origins: list[str] = []
    problems: list[str] = []
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            normal = origin(item)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if normal not in origins:
            origins.append(normal)
    if not origins and not problems:
        problems.append(f"{name} names no origin: set the URL people open the MLflow UI at, "
                        "e.g. https://mlflow.example.com")
    return origins, problems


def mlflow_cors_origins(env) -> tuple[list[str], list[str]]:
    """MLflow's CORS origins: MLFLOW_CORS_ORIGINS, or MLFLOW_UI_URL when that is unset or
    empty, normalised by :func:`cors_origins`."""
    if (env.get("MLFLOW_CORS_ORIGINS") or "").strip():
        return cors_origins(env["MLFLOW_CORS_ORIGINS"], "MLFLOW_CORS_ORIGINS")
    return cors_origins(env.get("MLFLOW_UI_URL") or "http://localhost:5000",
                        "MLFLOW_UI_URL (the default of MLFLOW_CORS_ORIGINS)")


def _url_problem(env) -> str | None:
    url = env.get("MLFLOW_UI_URL") or ""
    parts = urlsplit(url)
    if url and (parts.scheme not in _DEFAULT_PORTS or not parts.hostname):
        return (f"MLFLOW_UI_URL={url!r} is not an http(s) URL: write the address people open the "
                "MLflow UI at, e.g. https://mlflow.example.com or http://10.0.0.5:5000")
    return None


def _url_safe_problem(name: str, value: str | None) -> str | None:
    if value and not _URL_SAFE.match(value):
        bad = sorted({c for c in value if not _URL_SAFE.match(c)})
        kinds = ", ".join("a space" if c == " " else repr(c) for c in bad)
        return (f"{name} contains {kinds}, which breaks the URL compose writes it into: use "
                f"letters, digits and - . _ ~ only ({GENERATE})")
    return None


def check_environment(env) -> list[str]:
    """Every problem of the settings in ``env`` (a mapping like os.environ); empty when none."""
    problems = [mlflow_password_problem(name, env.get(name))
                for name in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_WORKER_PASSWORD")]
    problems += flower_auth_problems(env.get("FLOWER_BASIC_AUTH"))
    problems += mlflow_cors_origins(env)[1]
    problems.append(_url_problem(env))
    token = env.get("KERASYARD_API_TOKEN")
    if token is not None and len(token) < API_TOKEN_MIN:
        problems.append(f"KERASYARD_API_TOKEN is {len(token)} characters long; the API refuses "
                        f"tokens under {API_TOKEN_MIN}: set a longer one in .env ({GENERATE})")
    problems += [_url_safe_problem(name, env.get(name))
                 for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD")]
    problems += [f"{name} is set but no longer read: publish with {new} (ip:port) instead"
                 for name, new in REPLACED.items() if env.get(name)]
    return [p for p in problems if p]


def main() -> int:
    problems = check_environment(os.environ)
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    if problems:
        print(f"preflight: {len(problems)} setting(s) to fix in .env (.env.example documents "
              "each); migrate, mlflow and flower, and with them the API and the workers, were "
              "not started", file=sys.stderr)
        return 1
    origins, _ = mlflow_cors_origins(os.environ)
    print(f"preflight: settings ok; MLflow accepts browser requests from {', '.join(origins)}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
