"""Deployment settings the service refuses, and what it never logs."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from service.config import MIN_API_TOKEN_LENGTH, ConfigError, Settings, check_api_token, redact_url


def _settings(tmp_path, **changes) -> Settings:
    return dataclasses.replace(Settings.from_env(), data_dir=tmp_path,
                               database_url=f"sqlite:///{tmp_path / 'k.db'}",
                               broker_url="memory://", **changes)


def test_a_short_api_token_is_refused_naming_the_variable_not_the_value():
    assert MIN_API_TOKEN_LENGTH == 16
    with pytest.raises(ConfigError) as err:
        check_api_token("fifteen-chars!!")
    message = str(err.value)
    assert "KERASYARD_API_TOKEN is 15 characters long; it must have at least 16" in message
    assert "fifteen-chars!!" not in message
    check_api_token("x" * 16)
    check_api_token(None)  # unset: authentication off (the embedded runner on a laptop)


def test_the_api_refuses_to_start_with_a_short_token(tmp_path):
    from service.api import create_app

    with pytest.raises(ConfigError, match="KERASYARD_API_TOKEN"):
        create_app(_settings(tmp_path, api_token="s3cret"))
    app = create_app(_settings(tmp_path, api_token="a-long-enough-token"))
    assert app.test_client().get("/api/v1/jobs").status_code == 401


def test_the_api_start_log_has_no_password(tmp_path, caplog):
    from service.api import create_app

    settings = _settings(tmp_path, api_token=None)
    settings = dataclasses.replace(
        settings, database_url="postgresql+psycopg://kerasyard:pg-s3cret-pw@127.0.0.1:1/k")
    with caplog.at_level(logging.INFO):
        create_app(settings)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "kerasyard API ready (db=postgresql+psycopg://kerasyard:***@127.0.0.1:1/k)" in text
    assert "pg-s3cret-pw" not in text


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://u:p%40ss@postgres:5432/db", "postgresql+psycopg://u:***@postgres:5432/db"),
    ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("sqlite:///a/b.db", "sqlite:///a/b.db"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_gpu_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("KERASYARD_REQUIRE_GPU", "false")
    monkeypatch.setenv("KERASYARD_GPU_PROBE_TIMEOUT_S", "30")
    monkeypatch.setenv("KERASYARD_MIGRATE_WAIT_S", "5")
    s = Settings.from_env()
    assert (s.require_gpu, s.gpu_probe_timeout_s, s.migrate_wait_s) == (False, 30.0, 5.0)
