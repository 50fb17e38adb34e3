"""/api/v1/docs and the request examples it prefills from the OpenAPI document.

The page builds a form per operation: each request body is prefilled from that operation's own
``example`` (so "Send" on POST /sweeps sends a sweep, not a job), multipart operations get a file
input sent as FormData, and the schema list comes from the document. When node is installed the
page's script runs against a stub DOM and a stub fetch, and what it would send is checked.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess

import pytest
from werkzeug.wrappers import Request

from service.api.openapi import JOB_EXAMPLE, SWEEP_EXAMPLE, document
from service.spec import SpecError, validate_job
from service.spec.sweep_checks import validate_sweep
from tests.helpers import ROOT

PAGE = ROOT / "service" / "api" / "docs.html"


def _example(doc: dict, path: str, media: str = "application/json") -> dict:
    return doc["paths"][path]["post"]["requestBody"]["content"][media]["example"]


def _script() -> str:
    match = re.search(r"<script>(.*?)</script>", PAGE.read_text(), re.DOTALL)
    assert match, "docs.html has no inline script"
    return match.group(1)


def test_job_example_validates_as_a_job():
    doc = document()
    for media in ("application/json", "application/yaml"):
        _, plan = validate_job(_example(doc, "/api/v1/jobs", media))
        assert plan.epochs <= 50  # "Send" should not start a 1000-epoch run


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


def test_page_is_self_contained_and_has_no_hard_coded_body_or_schema_list():
    page = PAGE.read_text()
    assert "<link" not in page and " src=" not in page
    assert not re.search(r"https?://", page)
    assert "Schemas (JobSpec, Job, Error)" not in page
    assert not re.search(r"Schemas \([A-Z]\w*,", page)
    script = _script()
    assert "exampleOf(" in script and "lecture-mlp" not in script
    assert "multipart/form-data" in script
    assert 'type:"file"' in script
    assert "new FormData()" in script
    assert "doc.components" in script


# --- the page's script in node, against a stub DOM --------------------------------------------

HARNESS = r"""
const fs = require("fs");
const doc = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const script = fs.readFileSync(process.argv[3], "utf8");
class El {
  constructor(tag) { this.tagName = tag; this.children = []; this.value = ""; }
  append(...kids) { this.children.push(...kids); }
  walk(out = []) { out.push(this); for (const k of this.children) if (k instanceof El) k.walk(out); return out; }
  text() { return this.children.map(k => k instanceof El ? k.text() : String(k)).join("") + (this.textContent || ""); }
}
const byId = {intro: new El("p"), ops: new El("div"), token: new El("input")};
globalThis.document = {createElement: t => new El(t), getElementById: id => byId[id]};
const sent = [];
globalThis.fetch = async (url, init) => {
  if (url === "/api/v1/openapi.json") return {json: async () => doc};
  sent.push({url, init});
  return {status: 200, statusText: "OK", text: async () => "{}"};
};
new Function(script)();
(async () => {
  for (let i = 0; i < 100 && !byId.ops.children.length; i++) await new Promise(r => setTimeout(r, 5));
  const result = {ops: {}, schemas: null};
  for (const box of byId.ops.children) {
    const summary = box.children[0];
    const code = summary.walk().find(e => e.tagName === "code");
    const span = summary.walk().find(e => e.tagName === "span");
    if (!span) { result.schemas = summary.textContent; continue; }
    const key = span.textContent + " " + code.textContent;
    const els = box.walk();
    const textarea = els.find(e => e.tagName === "textarea");
    const files = els.filter(e => e.tagName === "input" && e.type === "file");
    const op = {textarea: textarea ? textarea.value : null, file_inputs: files.length};
    if (files.length) {
      const label = els.find(e => e.tagName === "label" && e.text().startsWith("name (query)"));
      label.children.find(k => k instanceof El && k.tagName === "input").value = "from-docs";
      files[0].files = [new File(["x,label\n1,0\n2,1\n"], "tiny.csv", {type: "text/csv"})];
      await els.find(e => e.tagName === "button").onclick();
      const {url, init} = sent[sent.length - 1];
      const wire = new Response(init.body);
      op.sent = {url, method: init.method, is_form: init.body instanceof FormData,
                 headers: init.headers, content_type: wire.headers.get("content-type"),
                 body_b64: Buffer.from(await wire.arrayBuffer()).toString("base64")};
    } else if (textarea && key === "POST /api/v1/sweeps") {
      await els.find(e => e.tagName === "button").onclick();
      const {url, init} = sent[sent.length - 1];
      op.sent = {url, method: init.method, headers: init.headers, body: init.body};
    }
    result.ops[key] = op;
  }
  console.log(JSON.stringify(result));
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    tmp = tmp_path_factory.mktemp("docs_page")
    (tmp / "doc.json").write_text(json.dumps(document()))
    (tmp / "page.js").write_text(_script())
    (tmp / "harness.js").write_text(HARNESS)
    proc = subprocess.run([node, str(tmp / "harness.js"), str(tmp / "doc.json"),
                           str(tmp / "page.js")], check=False, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_page_prefills_each_body_from_its_own_example(rendered):
    jobs = json.loads(rendered["ops"]["POST /api/v1/jobs"]["textarea"])
    sweeps = json.loads(rendered["ops"]["POST /api/v1/sweeps"]["textarea"])
    assert jobs == JOB_EXAMPLE and sweeps == SWEEP_EXAMPLE
    validate_job(jobs)
    validate_sweep(sweeps)
    sent = rendered["ops"]["POST /api/v1/sweeps"]["sent"]
    assert sent["url"] == "/api/v1/sweeps" and sent["method"] == "POST"
    assert sent["headers"]["Content-Type"] == "application/json"
    validate_sweep(json.loads(sent["body"]))


def test_page_uploads_a_dataset_as_multipart_file(rendered):
    op = rendered["ops"]["POST /api/v1/datasets"]
    assert op["textarea"] is None and op["file_inputs"] == 1
    sent = op["sent"]
    assert sent["is_form"] and sent["method"] == "POST"
    assert sent["url"] == "/api/v1/datasets?name=from-docs"
    assert "Content-Type" not in sent["headers"]  # the browser adds the multipart boundary
    body = base64.b64decode(sent["body_b64"])
    req = Request.from_values(input_stream=io.BytesIO(body), content_length=len(body),
                              content_type=sent["content_type"], method="POST")
    assert list(req.files) == ["file"] and not req.form  # `name` went as the query parameter
    upload = req.files["file"]
    assert upload.filename == "tiny.csv" and upload.read() == b"x,label\n1,0\n2,1\n"
    # operations without a request body get neither input
    assert rendered["ops"]["GET /api/v1/datasets"] == {"textarea": None, "file_inputs": 0}


def test_page_lists_the_documents_schemas(rendered):
    label = rendered["schemas"]
    names = re.fullmatch(r"Schemas \((.*)\)", label).group(1).split(", ")
    assert set(names) == set(document()["components"]["schemas"])
    assert names[:2] == ["JobSpec", "Job"]
    assert {"SweepSpec", "Sweep", "Trial", "Error"} <= set(names)
