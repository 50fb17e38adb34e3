"""Loaded before every other conftest and test module: PostgreSQL and Redis for the suite are
resolved (and started, when the suite brings its own) before anything reads
KERASYARD_TEST_PG / KERASYARD_TEST_REDIS. See tests/services.py and the README's Tests."""

from tests import services

services.activate()


def pytest_report_header(config):
    return services.report_lines()


def pytest_unconfigure(config):
    services.stop()
