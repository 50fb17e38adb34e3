"""Settings from the environment, and the Celery settings the architecture makes mandatory."""

from __future__ import annotations

import dataclasses

import pytest

from service.config import ENV, Settings, celery_config
from service.jobspec import Limits
from service.validation import limits


def test_embedded_defaults(monkeypatch, tmp_path):
    for var in ("DATABASE_URL", "BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KERASYARD_DATA_DIR", str(tmp_path))
    s = Settings.from_env()
    assert s.database_url == f"sqlite:///{tmp_path / 'kerasyard.db'}"
    assert s.broker_url == "filesystem://"
    assert s.mlflow_tracking_uri == s.mlflow_ui_url == "http://127.0.0.1:5050"


def test_bad_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("KERASYARD_MAX_EPOCHS", "lots")
    with pytest.raises(ValueError, match="KERASYARD_MAX_EPOCHS='lots' must be an integer"):
        Settings.from_env()
    monkeypatch.delenv("KERASYARD_MAX_EPOCHS")
    monkeypatch.setenv("KERASYARD_REPORT_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="must be a number"):
        Settings.from_env()


def test_mandatory_celery_settings(tmp_path):
    s = dataclasses.replace(Settings.from_env(), data_dir=tmp_path,
                            broker_url="redis://127.0.0.1:6379/0")
    conf = celery_config(s)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_ignore_result"] is True
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]


def test_filesystem_broker_folders_live_in_the_data_dir(tmp_path):
    s = dataclasses.replace(Settings.from_env(), data_dir=tmp_path, broker_url="filesystem://")
    opts = celery_config(s)["broker_transport_options"]
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert opts[key].startswith(str(tmp_path)), key
        assert (tmp_path / "broker").is_dir()


def _clean_env(monkeypatch):
    for f in dataclasses.fields(Settings):
        if ENV in f.metadata:
            monkeypatch.delenv(f.metadata[ENV], raising=False)


def test_each_default_is_the_dataclass_default_and_the_caps_default(monkeypatch):
    _clean_env(monkeypatch)
    s = Settings.from_env()
    for f in dataclasses.fields(Settings):
        if ENV in f.metadata:
            assert getattr(s, f.name) == f.default, f.name
    # The spec's caps default to the settings' (service.jobspec.plan.Limits reads them).
    assert limits(s) == Limits()
    assert {f.name for f in dataclasses.fields(Limits)} <= {f.name for f in
                                                             dataclasses.fields(Settings)}


SAMPLES = {"int": ("7", 7), "float": ("2.5", 2.5), "bool": ("yes", True), "str": ("x", "x"),
           "str | None": ("t" * 20, "t" * 20)}


def test_each_variable_sets_its_field_and_no_other(monkeypatch):
    _clean_env(monkeypatch)
    base = Settings.from_env()
    for f in dataclasses.fields(Settings):
        if ENV not in f.metadata:
            continue
        raw, value = SAMPLES[f.type]
        if f.type == "bool":  # a change from the default either way
            raw, value = ("no", False) if f.default else ("yes", True)
        monkeypatch.setenv(f.metadata[ENV], raw)
        changed = {g.name for g in dataclasses.fields(Settings)
                   if getattr(Settings.from_env(), g.name) != getattr(base, g.name)}
        monkeypatch.delenv(f.metadata[ENV])
        assert changed == {f.name}, f.metadata[ENV]
        monkeypatch.setenv(f.metadata[ENV], raw)
        assert getattr(Settings.from_env(), f.name) == value, f.metadata[ENV]
        monkeypatch.delenv(f.metadata[ENV])


def test_set_but_empty_keeps_the_default_except_for_the_plain_strings(monkeypatch):
    _clean_env(monkeypatch)
    for f in dataclasses.fields(Settings):
        if ENV in f.metadata:
            monkeypatch.setenv(f.metadata[ENV], "")
    s = Settings.from_env()
    assert s.default_queue == "" and s.keras_backend == ""  # as os.environ.get gave them
    assert s.api_token is None and s.max_params == Settings.max_params
