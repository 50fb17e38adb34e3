"""Loaded before every other conftest and test module: PostgreSQL and Redis for the suite are
resolved (and started, when the suite brings its own) before anything reads
KERASYARD_TEST_PG / KERASYARD_TEST_REDIS. See tests/services.py and docs/tests.md.

With pytest-xdist (``-n 2``) every worker process is a session of its own and brings its own
PostgreSQL, Redis and MLflow server. That needs ``KERASYARD_TEST_SERVICES=own``: on shared
servers the sessions would share Redis databases. The controller runs no test and stops what
it started as soon as it knows it is the controller."""

import os

import pytest

from tests import services


def _require_own_mode() -> None:
    """Under pytest -n (the controller and each worker): the suite's own servers only."""
    if services.mode() != "own":
        raise pytest.UsageError(
            f"pytest -n runs each worker as a session with its own PostgreSQL and Redis: set "
            f"{services.MODE_VAR}=own (./scripts/as-fresh-machine.sh make test "
            f"PYTEST_ARGS='-n 2' does it), not {services.MODE_VAR}={services.mode()}")


if os.environ.get("PYTEST_XDIST_WORKER"):
    _require_own_mode()
services.activate()


def _controller(config) -> bool:
    """This process is pytest-xdist's controller: its workers run the tests."""
    n = config.getoption("numprocesses", default=None)
    return bool(n) and str(n) != "0" and not hasattr(config, "workerinput")


def pytest_configure(config):
    if _controller(config):
        _require_own_mode()
        services.stop()


def pytest_report_header(config):
    if _controller(config):
        return [f"services ({services.MODE_VAR}=own): each xdist worker brings its own"]
    return services.report_lines()


def pytest_unconfigure(config):
    services.stop()
