"""Hostile request bodies get a clear 4xx, never a 500 or an echo that amplifies them.

The app runs on a throwaway SQLite database; nothing here needs a broker or a worker (every
request is refused before a job is stored).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from service.api import create_app
from service.api.body import MAX_BODY_BYTES, MAX_DEPTH
from service.config import Settings
from tests.helpers import sqlite_api_client, tiny_spec


def _strict_json(text: str):
    """JSON as a browser parses it: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} in a response")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return sqlite_api_client(tmp_path_factory.mktemp("hostile"))


def _post(client, body: bytes | str, ctype: str | None = "application/json",
          path: str = "/api/v1/jobs"):
    headers = {"Content-Type": ctype} if ctype else {}
    resp = client.post(path, data=body, headers=headers)
    _strict_json(resp.get_data(as_text=True))
    return resp


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/xml"])
@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/sweeps"])
def test_a_spec_needs_a_json_or_yaml_content_type(client, ctype, path):
    resp = _post(client, json.dumps(tiny_spec()), ctype, path)
    assert resp.status_code == 415
    err = resp.get_json()["error"]
    assert err["code"] == "unsupported_media_type"
    assert "application/json" in err["message"]


def test_yaml_anchors_and_aliases_are_refused_not_expanded(client):
    # The "billion laughs": each level multiplies the one before by 10.
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]")
    body = "\n".join(lines) + "\n"
    resp = _post(client, body, "application/yaml")
    assert resp.status_code == 400
    assert "anchors and aliases" in resp.get_json()["error"]["message"]
    assert len(resp.get_data()) < 2000


def test_a_yaml_merge_key_is_an_alias_too(client):
    body = "base: &b {units: 4}\nlayer:\n  <<: *b\n"
    resp = _post(client, body, "application/yaml")
    assert resp.status_code == 400


@pytest.mark.parametrize("ctype,body", [
    ("application/json", "[" * 10_000 + "]" * 10_000),
    ("application/json", '{"a":' * 5_000 + "1" + "}" * 5_000),
    ("application/json", "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)),
    ("application/yaml", "[" * 10_000 + "]" * 10_000),
])
def test_deep_nesting_is_a_400(client, ctype, body):
    resp = _post(client, body, ctype)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert "nested" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("ctype,body", [
    ("application/json", '{"name": ' + "9" * 5000 + "}"),
    ("application/yaml", "name: " + "9" * 5000 + "\n"),
])
def test_huge_integers_are_a_400(client, ctype, body):
    resp = _post(client, body, ctype)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert "digits" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("ctype,text", [
    ("application/json", "Infinity"), ("application/json", "-Infinity"),
    ("application/json", "NaN"), ("application/json", "1e999"),
    ("application/yaml", ".inf"), ("application/yaml", ".nan"), ("application/yaml", "-.inf"),
])
def test_non_finite_numbers_are_a_400(client, ctype, text):
    spec = tiny_spec()
    if ctype == "application/json":
        body = json.dumps(spec).replace('"learning_rate": 0.05', f'"learning_rate": {text}')
        assert text in body
    else:
        import yaml

        body = yaml.safe_dump(spec).replace("learning_rate: 0.05", f"learning_rate: {text}")
        assert f"learning_rate: {text}" in body
    resp = _post(client, body, ctype)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert "finite" in resp.get_json()["error"]["message"]


def test_a_body_over_the_cap_is_a_413(client):
    body = json.dumps({"name": "x" * (MAX_BODY_BYTES + 10)})
    resp = _post(client, body)
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"


def test_an_error_echoes_only_a_short_value(client):
    spec = tiny_spec()
    spec["model"]["layers"][0]["activation"] = "r" * 100_000
    resp = _post(client, json.dumps(spec))
    assert resp.status_code == 422
    assert len(resp.get_data()) < 5000
    detail = resp.get_json()["error"]["details"][0]
    assert detail["loc"] == "model.layers.0.activation"
    assert len(detail["value"]) <= 81


def test_405_says_which_methods_are_allowed(client):
    resp = client.delete("/api/v1/jobs")
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert resp.get_json()["error"]["code"] == "method_not_allowed"


def test_health_says_what_is_down_without_internals(tmp_path):
    settings = dataclasses.replace(
        Settings.from_env(), data_dir=tmp_path,
        database_url="postgresql+psycopg://kerasyard:s3cretpw@127.0.0.1:1/kerasyard",
        broker_url="redis://:brokerpw@127.0.0.1:1/0",
        mlflow_tracking_uri="http://user:mlflowpw@127.0.0.1:1", api_token=None)
    resp = create_app(settings).test_client().get("/api/v1/health")
    assert resp.status_code == 503
    text = resp.get_data(as_text=True)
    for secret in ("s3cretpw", "brokerpw", "mlflowpw", "127.0.0.1:1"):
        assert secret not in text
    components = resp.get_json()["components"]
    assert {k for k, v in components.items() if not v["ok"]} == {"database", "broker", "mlflow"}


def test_plots_print_dollar_signs_as_written(tmp_path):
    import numpy as np

    from worker.training import plots

    # Each of these fails matplotlib's math-text parser (ValueError) when it is on.
    title = "cost $x$ and $\\frac{1}{0$ and $^$"
    plots.learning_curve({"loss": [1.0, 0.5]}, tmp_path / "curve.png", title)
    plots.confusion_matrix(np.array([[1, 0], [0, 1]]), ["$a", "b$^"], tmp_path / "cm.png", title)
    assert (tmp_path / "curve.png").stat().st_size > 0 and (tmp_path / "cm.png").stat().st_size > 0


# --- specs that would fail later, or take a worker's host down, are refused at the door ------

def _locs(exc) -> set[str]:
    return {d.loc for d in exc.value.details}


@pytest.mark.parametrize("path,value", [
    (("fit", "seed"), -1), (("fit", "seed"), 2**32), (("dataset", "seed"), 2**40),
])
def test_seeds_outside_32_bits_are_refused(path, value):
    from service.jobspec import SpecError, validate_job

    spec = tiny_spec()
    spec[path[0]][path[1]] = value
    with pytest.raises(SpecError) as exc:
        validate_job(spec)
    assert ".".join(path) in _locs(exc)


@pytest.mark.parametrize("tags,ok", [
    ({"a$b": "x"}, False), ({"x y/z?": "x"}, False), ({"../up": "x"}, False),
    ({"/abs": "x"}, False), ({"k": "v" * 5001}, False), ({f"k{i}": "v" for i in range(51)}, False),
    ({"team/project name": "lecture", "run-1.a_b": "ok"}, True),
])
def test_tag_keys_must_be_ones_mlflow_accepts(tags, ok):
    from service.jobspec import SpecError, validate_job

    spec = tiny_spec(tags=tags)
    if ok:
        validate_job(spec)
        return
    with pytest.raises(SpecError) as exc:
        validate_job(spec)
    assert "tags" in _locs(exc)


def test_layer_lists_are_capped():
    from service.jobspec import SpecError, validate_job

    spec = tiny_spec()
    spec["model"]["layers"] = [{"type": "activation", "activation": "relu"}] * 100_000 + \
        spec["model"]["layers"]
    with pytest.raises(SpecError) as exc:
        validate_job(spec)
    assert "model.layers" in _locs(exc)


@pytest.mark.parametrize("n_samples,n_features", [(200_000, 40_000), (100_000, 20_000)])
def test_a_dataset_too_big_for_a_worker_is_refused_with_the_estimate(client, n_samples,
                                                                       n_features):
    spec = tiny_spec(dataset={"kind": "synthetic", "name": "classification",
                              "n_samples": n_samples, "n_features": n_features,
                              "n_classes": 2, "seed": 0})
    resp = _post(client, json.dumps(spec))
    assert resp.status_code == 422, resp.get_data(as_text=True)[:500]
    detail = next(d for d in resp.get_json()["error"]["details"] if d["loc"] == "dataset")
    assert "per-job budget of 2,048 MB" in detail["msg"] and "dataset" in detail["msg"]
    assert detail["value"] > 2048


def test_the_lecture_job_fits_the_budget_and_shows_its_estimate():
    from service.jobspec import validate_job
    from tests.helpers import lecture_spec

    _, plan = validate_job(lecture_spec())
    assert 0 < plan.memory_mb < 5


def _sweep(**overrides) -> dict:
    sweep = {"name": "s", "base": tiny_spec(), "method": "random", "max_trials": 3,
             "objective": {"metric": "loss"},
             "parameters": {"compile.optimizer.learning_rate":
                            {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}}
    sweep.update(overrides)
    return sweep


@pytest.mark.parametrize("overrides,loc", [
    ({"seed": 4295 * 10**6}, "seed"), ({"seed": -1}, "seed"), ({"seed": 2**40}, "seed"),
    ({"method": "grid", "max_trials": None, "parameters": {"fit.batch_size": []}},
     "parameters.fit.batch_size"),
    ({"early_stopping": {"type": "asha", "min_resource": 0}}, "early_stopping.min_resource"),
    ({"resources": {"queue": "tpu"}}, "resources.queue"),
    ({"resources": {"queue": "cpu", "extra": {"deep": [1]}}}, "resources.extra"),
])
def test_every_sweep_field_is_validated_at_the_door(overrides, loc):
    from service.jobspec import SpecError
    from service.jobspec.sweep_checks import validate_sweep

    with pytest.raises(SpecError) as exc:
        validate_sweep(_sweep(**overrides))
    assert any(d.startswith(loc) for d in _locs(exc)), _locs(exc)


@pytest.mark.parametrize("seed", [0, 4295, 2**32 - 1])
def test_any_valid_sweep_seed_seeds_the_samplers(seed):
    from service.jobspec.sweep_checks import validate_sweep
    from service.sweeps.studies import sampler

    sweep, _ = validate_sweep(_sweep(seed=seed))
    for method in ("random", "tpe"):
        spec = {**sweep.model_dump(mode="json"), "method": method}
        for n in (0, 1, 10_000):
            sampler(spec, n)  # numpy refuses seeds of 2**32 and above
