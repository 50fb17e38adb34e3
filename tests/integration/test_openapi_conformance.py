"""The API returns what its OpenAPI document declares.

Every route and method is called, for success and for each error it can give; every response
must have a status code the document declares for that operation, a content type it declares,
and a body valid (JSON Schema 2020-12, ``#/components/schemas/...`` refs resolved in the
document) against the schema it declares for that status.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.helpers import tiny_spec, wait_for

from .conftest import wait_terminal

pytestmark = pytest.mark.integration

DOC_URI = "urn:kerasyard:openapi"
SEEN: set[tuple[str, str]] = set()  # (path template, method) exercised


@pytest.fixture(scope="module")
def doc(app):
    return app.test_client().get("/api/v1/openapi.json").get_json()


@pytest.fixture(scope="module")
def registry(doc):
    return Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@pytest.fixture()
def call(client, doc, registry):
    """``call(method, template, status, path=..., **kw)``: the response, checked against the
    document's declaration for (template, method, status)."""

    def _call(method: str, template: str, status: int, path: str | None = None, **kw):
        resp = getattr(client, method)(path or template, **kw)
        op = doc["paths"].get(template, {}).get(method)
        assert op is not None, f"{method.upper()} {template} is not in the OpenAPI document"
        SEEN.add((template, method))
        declared = op["responses"]
        assert str(resp.status_code) in declared, (
            f"{method.upper()} {path or template} returned {resp.status_code}, which the "
            f"document does not declare (it declares {sorted(declared)}): {resp.get_data()[:500]}")
        assert resp.status_code == status, (resp.status_code, resp.get_data()[:2000])
        content = declared[str(resp.status_code)].get("content")
        if 300 <= resp.status_code < 400:
            assert resp.headers.get("Location")
            return resp
        assert content, f"{method.upper()} {template} {resp.status_code} declares no content"
        assert resp.mimetype in content, (resp.mimetype, sorted(content))
        pointer = _pointer("paths", template, method, "responses", str(resp.status_code),
                           "content", resp.mimetype, "schema")
        if resp.is_json:
            body = resp.get_json()
        elif resp.mimetype.startswith("text/"):
            body = resp.get_data(as_text=True)
        else:  # bytes (the docs page's favicon): a string to the schema, whatever they are
            body = resp.get_data().decode("latin-1")
        validator = Draft202012Validator({"$ref": f"{DOC_URI}#/{pointer}"}, registry=registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, (f"{method.upper()} {path or template} {resp.status_code}: "
                            + "; ".join(f"{list(e.absolute_path)}: {e.message[:300]}"
                                        for e in errors[:5]))
        return resp

    return _call


def test_the_document_is_a_valid_2020_12_schema_set(doc):
    assert doc["openapi"].startswith("3.1")
    Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})


def test_jobs(call):
    created = call("post", "/api/v1/jobs", 202, json=tiny_spec("conform", epochs=1,
                                                               resources={"queue": "gpu"})
                   ).get_json()
    assert created["spec"]["fit"]["shuffle"] is True  # the validated spec, defaults filled in
    job_id = created["id"]
    other = call("post", "/api/v1/jobs", 202, content_type="application/yaml",
                 data=yaml.safe_dump(tiny_spec("conform-yaml", epochs=1))).get_json()
    call("post", "/api/v1/jobs/{job_id}/cancel", 202, f"/api/v1/jobs/{other['id']}/cancel")
    call("post", "/api/v1/jobs", 422, json=tiny_spec(fit={"epochs": True}))
    call("post", "/api/v1/jobs", 400, data="{not json", content_type="application/json")
    call("post", "/api/v1/jobs", 400, data="", content_type="application/json")
    call("get", "/api/v1/jobs/{job_id}", 200, f"/api/v1/jobs/{job_id}")
    call("get", "/api/v1/jobs/{job_id}", 404, "/api/v1/jobs/nope")
    call("get", "/api/v1/jobs/{job_id}/history", 200, f"/api/v1/jobs/{job_id}/history")
    call("get", "/api/v1/jobs/{job_id}/history", 404, "/api/v1/jobs/nope/history")

    page = call("get", "/api/v1/jobs", 200, "/api/v1/jobs?limit=1").get_json()
    assert len(page["jobs"]) == 1 and page["next_cursor"]
    call("get", "/api/v1/jobs", 200, f"/api/v1/jobs?limit=1&cursor={page['next_cursor']}")
    call("get", "/api/v1/jobs", 200, "/api/v1/jobs?status=queued&experiment=tests")
    call("get", "/api/v1/jobs", 400, "/api/v1/jobs?status=nope")
    call("get", "/api/v1/jobs", 400, "/api/v1/jobs?limit=0")
    call("get", "/api/v1/jobs", 400, "/api/v1/jobs?cursor=%%%")

    call("post", "/api/v1/jobs/{job_id}/cancel", 202, f"/api/v1/jobs/{job_id}/cancel")
    wait_for(lambda: call("get", "/api/v1/jobs/{job_id}", 200, f"/api/v1/jobs/{job_id}")
             .get_json()["status"] == "cancelled", 60, 0.2, "the cancel")
    call("post", "/api/v1/jobs/{job_id}/cancel", 409, f"/api/v1/jobs/{job_id}/cancel")
    call("post", "/api/v1/jobs/{job_id}/cancel", 404, "/api/v1/jobs/nope/cancel")


def test_a_strict_type_is_422_naming_the_field(call):
    spec = tiny_spec("strict", fit={"epochs": True})
    spec["model"]["layers"][0]["units"] = "64"
    for kw in ({"json": spec}, {"data": yaml.safe_dump(spec), "content_type": "application/yaml"}):
        err = call("post", "/api/v1/jobs", 422, **kw).get_json()["error"]
        assert err["code"] == "invalid_spec"
        details = {d["loc"]: d for d in err["details"]}
        assert set(details) == {"fit.epochs", "model.layers.0.units"}
        assert details["fit.epochs"]["value"] is True
        assert "expected an integer, got true (a boolean)" in details["fit.epochs"]["msg"]
        assert details["model.layers.0.units"]["value"] == "64"
        assert 'got "64" (a string); write 64 without quotes' in \
            details["model.layers.0.units"]["msg"]


def _sweep(name: str) -> dict:
    base = tiny_spec(name, epochs=500)
    return {"name": name, "base": base, "parameters": {"fit.batch_size": [8, 16]},
            "objective": {"metric": "loss"}, "max_parallel": 1}


def test_sweeps(call):
    sweep = call("post", "/api/v1/sweeps", 202, json=_sweep("conform-sweep")).get_json()
    sweep_id = sweep["id"]
    other = call("post", "/api/v1/sweeps", 202, data=yaml.safe_dump(_sweep("conform-sweep-yaml")),
                 content_type="application/yaml").get_json()
    call("post", "/api/v1/sweeps/{sweep_id}/cancel", 202, f"/api/v1/sweeps/{other['id']}/cancel")
    call("post", "/api/v1/sweeps", 422, json={**_sweep("bad"), "max_trials": "2"})
    call("post", "/api/v1/sweeps", 400, data="[", content_type="application/json")
    got = call("get", "/api/v1/sweeps/{sweep_id}", 200, f"/api/v1/sweeps/{sweep_id}").get_json()
    assert len(got["trials"]) == 2
    call("get", "/api/v1/sweeps/{sweep_id}", 404, "/api/v1/sweeps/nope")
    page = call("get", "/api/v1/sweeps", 200, "/api/v1/sweeps?limit=1").get_json()
    assert len(page["sweeps"]) == 1 and page["next_cursor"]
    call("get", "/api/v1/sweeps", 200, f"/api/v1/sweeps?limit=1&cursor={page['next_cursor']}")
    call("get", "/api/v1/sweeps", 400, "/api/v1/sweeps?status=nope")

    call("post", "/api/v1/sweeps/{sweep_id}/cancel", 202, f"/api/v1/sweeps/{sweep_id}/cancel")
    wait_for(lambda: call("get", "/api/v1/sweeps/{sweep_id}", 200, f"/api/v1/sweeps/{sweep_id}")
             .get_json()["status"] == "cancelled", 60, 0.5, "the sweep to be cancelled")
    call("post", "/api/v1/sweeps/{sweep_id}/cancel", 409, f"/api/v1/sweeps/{sweep_id}/cancel")
    call("post", "/api/v1/sweeps/{sweep_id}/cancel", 404, "/api/v1/sweeps/nope/cancel")


def test_datasets(call, settings, doc, registry):
    csv_text = "x1,x2,label\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(30))
    ds = call("post", "/api/v1/datasets", 201, "/api/v1/datasets?name=conform", data=csv_text,
              content_type="text/csv").get_json()
    call("post", "/api/v1/datasets", 201, data={"file": (io.BytesIO(
        csv_text.encode()), "d.csv")}, content_type="multipart/form-data")
    call("post", "/api/v1/datasets", 400, data={"other": (io.BytesIO(b"a"), "a")},
         content_type="multipart/form-data")
    call("post", "/api/v1/datasets", 400, data="", content_type="text/csv")
    call("post", "/api/v1/datasets", 422, data="a,b\n1,2\n", content_type="text/csv")
    arrays = io.BytesIO()
    np.savez(arrays, x=np.zeros((4, 2, 3), dtype="float32"), y=np.arange(4))
    got = call("post", "/api/v1/datasets", 201, "/api/v1/datasets?name=npz",
               data=arrays.getvalue(), content_type="application/x-npz").get_json()
    assert got["format"] == "npz" and got["arrays"]["x"]["shape"] == [4, 2, 3]
    call("get", "/api/v1/datasets/{dataset_id}", 200, f"/api/v1/datasets/{got['id']}")
    call("post", "/api/v1/datasets", 201, data={"file": (io.BytesIO(arrays.getvalue()),
                                                         "a.npz")},
         content_type="multipart/form-data")
    call("post", "/api/v1/datasets", 422, data=b"PK\x03\x04junk",
         content_type="application/x-npz")
    call("get", "/api/v1/datasets", 200)
    call("get", "/api/v1/datasets", 200, "/api/v1/datasets?limit=1")
    call("get", "/api/v1/datasets", 400, "/api/v1/datasets?limit=0")
    call("get", "/api/v1/datasets/{dataset_id}", 200, f"/api/v1/datasets/{ds['id']}")
    call("get", "/api/v1/datasets/{dataset_id}", 404, "/api/v1/datasets/nope")

    from service.api import create_app

    small = create_app(dataclasses.replace(settings, max_upload_bytes=1000)).test_client()
    resp = small.post("/api/v1/datasets", data="a,b\n" + "1,2\n" * 400, content_type="text/csv")
    assert resp.status_code == 413
    assert "413" in doc["paths"]["/api/v1/datasets"]["post"]["responses"]
    Draft202012Validator({"$ref": f"{DOC_URI}#/components/schemas/Error"},
                         registry=registry).validate(resp.get_json())


def test_models(call, tmp_path):
    keras = pytest.importorskip("keras")
    path = tmp_path / "m.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]).save(path)
    content = path.read_bytes()
    model = call("post", "/api/v1/models", 201, "/api/v1/models?name=conform", data=content,
                 content_type="application/x-keras").get_json()
    call("post", "/api/v1/models", 201, data={"file": (io.BytesIO(content), "m.keras")},
         content_type="multipart/form-data")
    call("post", "/api/v1/models", 400, data={"other": (io.BytesIO(b"a"), "a")},
         content_type="multipart/form-data")
    call("post", "/api/v1/models", 400, data=b"", content_type="application/x-keras")
    call("post", "/api/v1/models", 415, data=content, content_type="text/plain")
    call("post", "/api/v1/models", 422, data=b"not a zip", content_type="application/x-keras")
    call("get", "/api/v1/models", 200)
    call("get", "/api/v1/models", 400, "/api/v1/models?limit=0")
    call("get", "/api/v1/models/{model_id}", 200, f"/api/v1/models/{model['id']}")
    call("get", "/api/v1/models/{model_id}", 404, "/api/v1/models/nope")


def test_auth_errors_are_declared(settings, doc, registry):
    from service.api import create_app

    c = create_app(dataclasses.replace(settings, api_token="s3cret-token-of-16-chars")
                   ).test_client()
    for path, method in (("/api/v1/jobs", "get"), ("/api/v1/sweeps", "get"),
                         ("/api/v1/datasets", "get"), ("/api/v1/jobs/x", "get")):
        resp = getattr(c, method)(path)
        assert resp.status_code == 401
        template = path if path in doc["paths"] else "/api/v1/jobs/{job_id}"
        assert "401" in doc["paths"][template][method]["responses"]
        Draft202012Validator({"$ref": f"{DOC_URI}#/components/schemas/Error"},
                             registry=registry).validate(resp.get_json())


def test_health_openapi_docs_and_redirects(call):
    call("get", "/api/v1/health", 200)
    call("get", "/api/v1/openapi.json", 200)
    call("get", "/api/v1/docs", 200)
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"):
        call("get", "/api/v1/docs/{asset}", 200, f"/api/v1/docs/{asset}")
    call("get", "/api/v1/docs/{asset}", 404, "/api/v1/docs/index.css")
    call("get", "/openapi.json", 302)
    call("get", "/docs", 302)


def test_a_trained_job_and_its_history(call, worker, client):
    job = call("post", "/api/v1/jobs", 202, json=tiny_spec("conform-trained", epochs=2)).get_json()
    done = wait_terminal(client, job["id"], timeout=300)
    assert done["status"] == "succeeded", done
    got = call("get", "/api/v1/jobs/{job_id}", 200, f"/api/v1/jobs/{job['id']}").get_json()
    assert got["summary"] and got["mlflow"]["run_id"]
    hist = call("get", "/api/v1/jobs/{job_id}/history", 200,
                f"/api/v1/jobs/{job['id']}/history").get_json()
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2]
    call("post", "/api/v1/jobs/{job_id}/cancel", 409, f"/api/v1/jobs/{job['id']}/cancel")


def test_pause_and_resume(call, idle_client):
    """On a job and a sweep stored through a broker no worker reads (the same database), so
    each stays where the test puts it until it resumes them."""
    job_id = idle_client.post("/api/v1/jobs", json=tiny_spec("conform-pause")).get_json()["id"]
    path = f"/api/v1/jobs/{job_id}"
    assert call("post", "/api/v1/jobs/{job_id}/pause", 202, f"{path}/pause"
                ).get_json()["status"] == "paused"
    call("post", "/api/v1/jobs/{job_id}/pause", 200, f"{path}/pause")
    call("post", "/api/v1/jobs/{job_id}/pause", 404, "/api/v1/jobs/nope/pause")
    # Queued again and sent to the session's worker, which may have claimed it already.
    assert call("post", "/api/v1/jobs/{job_id}/resume", 202, f"{path}/resume"
                ).get_json()["status"] in ("queued", "running")
    call("post", "/api/v1/jobs/{job_id}/resume", 409, f"{path}/resume")
    call("post", "/api/v1/jobs/{job_id}/resume", 404, "/api/v1/jobs/nope/resume")
    call("post", "/api/v1/jobs/{job_id}/cancel", 202, f"{path}/cancel")
    wait_for(lambda: call("get", "/api/v1/jobs/{job_id}", 200, path)
             .get_json()["status"] == "cancelled", 60, 0.2, "the cancel")
    call("post", "/api/v1/jobs/{job_id}/pause", 409, f"{path}/pause")

    sweep_id = idle_client.post("/api/v1/sweeps", json=_sweep("conform-pause")).get_json()["id"]
    path = f"/api/v1/sweeps/{sweep_id}"
    assert call("post", "/api/v1/sweeps/{sweep_id}/pause", 202, f"{path}/pause"
                ).get_json()["status"] == "paused"
    call("post", "/api/v1/sweeps/{sweep_id}/pause", 200, f"{path}/pause")
    call("post", "/api/v1/sweeps/{sweep_id}/pause", 404, "/api/v1/sweeps/nope/pause")
    call("post", "/api/v1/sweeps/{sweep_id}/resume", 202, f"{path}/resume")
    call("post", "/api/v1/sweeps/{sweep_id}/resume", 409, f"{path}/resume")
    call("post", "/api/v1/sweeps/{sweep_id}/resume", 404, "/api/v1/sweeps/nope/resume")
    call("post", "/api/v1/sweeps/{sweep_id}/cancel", 202, f"{path}/cancel")
    wait_for(lambda: call("get", "/api/v1/sweeps/{sweep_id}", 200, path)
             .get_json()["status"] == "cancelled", 60, 0.5, "the sweep to be cancelled")
    call("post", "/api/v1/sweeps/{sweep_id}/pause", 409, f"{path}/pause")


def test_every_operation_is_exercised(doc, request):
    mine = [i for i in request.session.items if i.module is request.module]
    if len(mine) != len([n for n in dir(request.module) if n.startswith("test_")]):
        pytest.skip("only part of this file ran")
    declared = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert declared - SEEN == set()
