"""deploy/mlflow/preflight.py, the settings check `docker compose up` runs first, and
deploy/mlflow/serve.py, which starts MLflow with the CORS origins it normalises.

Each check names the variable, what is wrong and the fix, and never the secret. As compose runs
them: tests/unit/test_compose_file.py (the preflight service) and
tests/integration/test_compose.py (MLflow through serve.py, its CORS answered by the server).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.compose_support import TEST_SECRETS
from tests.helpers import ROOT

MLFLOW_ETC = ROOT / "deploy" / "mlflow"


def _load(name: str):
    """A script of deploy/mlflow as the image has it: its folder first on sys.path."""
    sys.path.insert(0, str(MLFLOW_ETC))
    try:
        spec = importlib.util.spec_from_file_location(name, MLFLOW_ETC / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(MLFLOW_ETC))


preflight = _load("preflight")
serve = _load("serve")


def test_the_password_minimum_is_mlflows_own():
    """MLflow's basic-auth policy, read from the installed MLflow: 12 characters."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_password

    _validate_password("x" * preflight.MLFLOW_MIN_PASSWORD)
    with pytest.raises(MlflowException, match="at least 12 characters"):
        _validate_password("x" * (preflight.MLFLOW_MIN_PASSWORD - 1))


@pytest.mark.parametrize("value, problem", [
    (None, "MLFLOW_ADMIN_PASSWORD is empty: set it in .env"),
    ("", "MLFLOW_ADMIN_PASSWORD is empty: set it in .env"),
    ("elevenchars", "MLFLOW_ADMIN_PASSWORD is 11 characters long; MLflow's basic-auth refuses "
                    "passwords under 12 characters: set a longer one in .env"),
    ("password1234", "MLFLOW_ADMIN_PASSWORD is the default password of older MLflow releases"),
    ("twelve-chars", None),
])
def test_mlflow_password_rules(value, problem):
    found = preflight.mlflow_password_problem("MLFLOW_ADMIN_PASSWORD", value)
    if problem is None:
        assert found is None
    else:
        assert found.startswith(problem), found
        assert not value or value not in found


@pytest.mark.parametrize("value, problems", [
    ("admin:a-long-password", []),
    ("admin:a-long-password,ops:another-long-one", []),
    ("admin:pa:ss-with-colons", []),  # Flower compares "user:password" whole: fine
    ("", ["FLOWER_BASIC_AUTH is empty: Flower expects user:password"]),
    ("adminpassword", ["FLOWER_BASIC_AUTH has no ':' between user and password"]),
    (":a-long-password", ["FLOWER_BASIC_AUTH has an empty user before ':'"]),
    ("admin:", ["FLOWER_BASIC_AUTH has an empty password after ':'"]),
    ("admin:short", ["FLOWER_BASIC_AUTH: the password is 5 characters long; use at least 12"]),
    (" admin:a-long-password", ["FLOWER_BASIC_AUTH has spaces around it"]),
    ("admin:a-long-password,ops", ["FLOWER_BASIC_AUTH (entry 2 of 2) has no ':'"]),
    ("admin:a-long,password", ["FLOWER_BASIC_AUTH (entry 1 of 2): the password is 6 characters",
                               "FLOWER_BASIC_AUTH (entry 2 of 2) has no ':'"]),
])
def test_flower_basic_auth_form(value, problems):
    found = preflight.flower_auth_problems(value)
    assert len(found) == len(problems), found
    for got, want in zip(found, problems):
        assert got.startswith(want), got
    secret = value.partition(":")[2]
    assert not secret or all(secret not in p for p in found)


@pytest.mark.parametrize("value, origins", [
    ("http://localhost:5000", ["http://localhost:5000"]),
    ("https://mlflow.example.com/", ["https://mlflow.example.com"]),
    ("https://mlflow.example.com///", ["https://mlflow.example.com"]),
    ("https://MLflow.Example.com:443/ui/", ["https://mlflow.example.com"]),
    ("http://10.0.0.5:80", ["http://10.0.0.5"]),
    (" https://a.example.com/ , http://10.0.0.5:5000/,,https://a.example.com",
     ["https://a.example.com", "http://10.0.0.5:5000"]),
    ("https://*.example.com/", ["https://*.example.com"]),
    ("http://[::1]:5000/", ["http://[::1]:5000"]),
    ("*", ["*"]),
])
def test_cors_origins_are_a_list_reduced_to_what_a_browser_sends(value, origins):
    assert preflight.cors_origins(value, "MLFLOW_CORS_ORIGINS") == (origins, [])


@pytest.mark.parametrize("value, problem", [
    ("mlflow.example.com", "MLFLOW_CORS_ORIGINS: 'mlflow.example.com' is not an origin: write "
                           "scheme://host[:port]"),
    ("ftp://mlflow.example.com", "MLFLOW_CORS_ORIGINS: 'ftp://mlflow.example.com' is not an "
                                 "origin"),
    ("https://", "MLFLOW_CORS_ORIGINS: 'https://' is not an origin"),
    ("http://host:port/", "MLFLOW_CORS_ORIGINS: 'http://host:port/' has a port that is not a "
                          "number"),
    (" , ", "MLFLOW_CORS_ORIGINS names no origin"),
])
def test_a_cors_entry_that_is_not_an_origin_is_named_with_the_fix(value, problem):
    origins, problems = preflight.cors_origins(value, "MLFLOW_CORS_ORIGINS")
    assert origins == [] and len(problems) == 1 and problems[0].startswith(problem), problems


def test_cors_origins_default_to_the_ui_url():
    env = {"MLFLOW_UI_URL": "https://mlflow.example.com/"}
    assert preflight.mlflow_cors_origins(env) == (["https://mlflow.example.com"], [])
    env["MLFLOW_CORS_ORIGINS"] = "  "
    assert preflight.mlflow_cors_origins(env)[0] == ["https://mlflow.example.com"]
    env["MLFLOW_CORS_ORIGINS"] = "http://10.0.0.5:5000/"
    assert preflight.mlflow_cors_origins(env)[0] == ["http://10.0.0.5:5000"]
    assert preflight.mlflow_cors_origins({}) == (["http://localhost:5000"], [])
    _, problems = preflight.mlflow_cors_origins({"MLFLOW_UI_URL": "mlflow.example.com"})
    assert problems[0].startswith("MLFLOW_UI_URL (the default of MLFLOW_CORS_ORIGINS): "
                                  "'mlflow.example.com' is not an origin")


def test_the_whole_environment_the_test_secrets_pass_and_each_mistake_is_named():
    assert preflight.check_environment(TEST_SECRETS) == []
    bad = {**TEST_SECRETS, "POSTGRES_PASSWORD": "p@ss/word", "REDIS_PASSWORD": "has space",
           "KERASYARD_API_TOKEN": "short", "MLFLOW_UI_URL": "localhost:5000",
           "MLFLOW_CORS_ORIGINS": "http://localhost:5000", "FLOWER_PORT": "5555"}
    problems = preflight.check_environment(bad)
    assert problems == [
        "MLFLOW_UI_URL='localhost:5000' is not an http(s) URL: write the address people open "
        "the MLflow UI at, e.g. https://mlflow.example.com or http://10.0.0.5:5000",
        "KERASYARD_API_TOKEN is 5 characters long; the API refuses tokens under 16: set a "
        "longer one in .env (e.g. `openssl rand -hex 24`)",
        "POSTGRES_PASSWORD contains '/', '@', which breaks the URL compose writes it into: use "
        "letters, digits and - . _ ~ only (e.g. `openssl rand -hex 24`)",
        "REDIS_PASSWORD contains a space, which breaks the URL compose writes it into: use "
        "letters, digits and - . _ ~ only (e.g. `openssl rand -hex 24`)",
        "FLOWER_PORT is set but no longer read: publish with FLOWER_PUBLISH=127.0.0.1:5555 "
        "(ip:port) instead",
    ]
    text = "\n".join(problems)
    assert "p@ss" not in text and "has space" not in text and "short" not in text.replace(
        "shorter", "")


def test_serve_starts_mlflow_with_the_normalised_origins():
    argv = ["server", "--app-name", "basic-auth", "--port", "5000"]
    cmd = serve.command(argv, {"MLFLOW_CORS_ORIGINS": "https://a.example.com/,http://b:5000/"})
    assert cmd == [sys.executable, "-m", "mlflow", *argv, "--cors-allowed-origins",
                   "https://a.example.com,http://b:5000"]
    assert serve.command(argv, {})[-1] == "http://localhost:5000"
    with pytest.raises(SystemExit, match="serve: MLFLOW_CORS_ORIGINS: 'b' is not an origin"):
        serve.command(argv, {"MLFLOW_CORS_ORIGINS": "b"})
    with pytest.raises(SystemExit, match="not --cors-allowed-origins"):
        serve.command([*argv, "--cors-allowed-origins", "x"], {})
