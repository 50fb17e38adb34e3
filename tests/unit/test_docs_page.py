"""/api/v1/docs (Swagger UI from the flask-swagger-ui package, served by the API itself) and
the request examples it prefills from the OpenAPI document.

Each request body is prefilled from its operation's own ``example`` (so "Execute" on POST
/sweeps sends a sweep, not a job). tests/integration/test_docs_browser.py drives the page in a
real browser.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from service.api.docs import swagger_ui_dist
from service.api.openapi import DOCS_ASSETS, JOB_EXAMPLE, SWEEP_EXAMPLE, TAGS, document
from service.jobspec import SpecError, validate_job
from service.jobspec.sweep_checks import validate_sweep
from tests.helpers import ROOT, sqlite_api_client


def _example(doc: dict, path: str, media: str = "application/json") -> dict:
    return doc["paths"][path]["post"]["requestBody"]["content"][media]["example"]


def test_job_example_validates_as_a_job():
    doc = document()
    for media in ("application/json", "application/yaml"):
        _, plan = validate_job(_example(doc, "/api/v1/jobs", media))
        assert plan.epochs <= 50  # "Execute" should not start a 1000-epoch run


def test_sweep_example_validates_as_a_sweep_and_not_as_a_job():
    doc = document()
    for media in ("application/json", "application/yaml"):
        example = _example(doc, "/api/v1/sweeps", media)
        _, plan = validate_sweep(example)
        assert plan.total <= 8  # a small grid, not the 36 trials of examples/sweep_lecture.json
    with pytest.raises(SpecError):
        validate_job(example)


def test_examples_follow_the_shipped_example_files():
    job = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    job["fit"]["epochs"] = JOB_EXAMPLE["fit"]["epochs"]
    assert JOB_EXAMPLE == job
    sweep = json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())
    assert {k: v for k, v in SWEEP_EXAMPLE.items() if k != "parameters"} == \
        {k: v for k, v in sweep.items() if k != "parameters"}
    assert SWEEP_EXAMPLE["parameters"].keys() == sweep["parameters"].keys()
    for path, values in SWEEP_EXAMPLE["parameters"].items():
        assert set(values) <= set(sweep["parameters"][path]), path


def test_document_serializes_and_is_the_same_on_every_call():
    doc = document()
    json.dumps(doc)
    before = copy.deepcopy(doc)
    assert document() == before


TOKEN = "docs-page-token-0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The API with a token set, on a throwaway SQLite database (nothing here is stored)."""
    return sqlite_api_client(tmp_path_factory.mktemp("docs"), api_token=TOKEN)


def test_page_loads_only_files_the_api_serves(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not re.search(r'https?://|="//', html)  # nothing from another host
    loaded = re.findall(r'(?:href|src)="([^"]+)"', html)
    # Relative to /api/v1/docs: docs/<file> is /api/v1/docs/<file>.
    assert sorted(loaded) == sorted(f"docs/{name}" for name in DOCS_ASSETS)
    assert 'url: "openapi.json"' in html  # /api/v1/openapi.json, relative too
    for name, ctype in DOCS_ASSETS.items():
        resp = client.get(f"/api/v1/docs/{name}")  # no token: the page is public
        assert resp.status_code == 200, name
        assert resp.mimetype == ctype
        assert resp.get_data() == (swagger_ui_dist() / name).read_bytes()


def test_swagger_ui_is_a_release_that_reads_openapi_3_1():
    # Swagger UI renders OpenAPI 3.1 documents from 5.0 on; swagger-ui-bundle (4.15) does not.
    version = (swagger_ui_dist() / "VERSION").read_text().strip().lstrip("v")
    assert int(version.split(".")[0]) >= 5, version
    assert document()["openapi"].startswith("3.1")


@pytest.mark.parametrize("name", ["swagger-ui.js", "index.css", "VERSION", "x" * 300,
                                  "..%2Fflask_swagger_ui.py", "..%2F..%2Fdocs.py"])
def test_only_the_pages_files_are_served(client, name):
    resp = client.get(f"/api/v1/docs/{name}")
    assert resp.status_code == 404
    err = resp.get_json()["error"]
    assert err["code"] == "not_found"
    if "%2F" not in name:  # a slash takes the path off the route: the router's own 404
        assert "swagger-ui-bundle.js" in err["message"]


def test_token_is_a_bearer_scheme_that_authorize_can_fill(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    assert doc["security"] == [{"bearer": []}]
    public = {path for path, ops in doc["paths"].items()
              if all(op.get("security") == [{}] for op in ops.values())}
    assert {"/api/v1/docs", "/api/v1/docs/{asset}", "/api/v1/openapi.json"} <= public
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 200


def test_every_operation_has_a_tag_and_a_unique_operation_id():
    # Deep links are #/<tag>/<operationId>.
    doc = document()
    ops = [op for path_ops in doc["paths"].values() for op in path_ops.values()]
    names = {t["name"] for t in doc["tags"]}
    assert names == {t["name"] for t in TAGS}
    assert all(len(op["tags"]) == 1 and op["tags"][0] in names for op in ops)
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids))
    assert doc["paths"]["/api/v1/jobs"]["post"]["tags"] == ["jobs"]
    assert doc["paths"]["/api/v1/sweeps/{sweep_id}"]["get"]["tags"] == ["sweeps"]
    assert doc["paths"]["/api/v1/health"]["get"]["tags"] == ["service"]
