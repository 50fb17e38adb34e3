"""The OpenAPI 3.1 document: every route, with the job spec schema generated from pydantic."""

from __future__ import annotations

from service import __version__
from service.api.body import MAX_INT_DIGITS
from service.jobs import STATUSES
from service.jobspec import OPTIMIZERS, JobSpec
from service.jobspec.sweep import SweepSpec
from service.sweeps.commands import SWEEP_STATUSES

# The docs page's files (service/api/docs.py serves them) and the content type of each.
DOCS_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
               "favicon-32x32.png": "image/png"}

REF = "#/components/schemas/{model}"

# Request body examples; /api/v1/docs (Swagger UI) prefills its request bodies from them.
# Embedded rather than read from examples/ because the API image may be installed without the
# repository's examples.
# tests/unit/test_docs_page.py checks they validate and still match those files.
_LECTURE_BASE = {
    "dataset": {"kind": "synthetic", "name": "classification",
                "n_samples": 200, "n_features": 50, "n_classes": 10, "seed": 0},
    "model": {"layers": [{"type": "dense", "units": 64, "activation": "relu"},
                         {"type": "dense", "units": 28, "activation": "relu"},
                         {"type": "dense", "units": 10, "activation": "softmax"}]},
    "compile": {"loss": "sparse_categorical_crossentropy",
                "optimizer": {"name": "sgd", "learning_rate": 0.01},
                "metrics": ["accuracy"]},
}
# examples/lecture_mlp.json with 20 epochs instead of 1000, so "Execute" is quick: 250 samples,
# 50 held out, so the lecture's 200 training samples (40 updates an epoch at batch size 5)
# are scored on data they were not fitted to.
JOB_EXAMPLE = {"name": "lecture-mlp", "experiment": "lecture", **_LECTURE_BASE,
               "dataset": {**_LECTURE_BASE["dataset"], "n_samples": 250},
               "fit": {"batch_size": 5, "epochs": 20, "validation_split": 0.2, "seed": 0}}
# examples/sweep_lecture.json with a smaller grid: 2 x 2 x 2 = 8 trials rather than 36.
SWEEP_EXAMPLE = {
    "name": "lecture: batch size x activation x epochs",
    "experiment": "lecture-sweep",
    "method": "grid",
    "base": {"name": "lecture-mlp", "experiment": "lecture-sweep", **_LECTURE_BASE,
             "fit": {"batch_size": 5, "epochs": 10, "validation_split": 0.2, "seed": 0}},
    "parameters": {"fit.batch_size": [5, 40],
                   "model.hidden_activation": ["sigmoid", "relu"],
                   "fit.epochs": [10, 50]},
    "objective": {"metric": "val_loss", "goal": "minimize"},
    "max_parallel": 2,
}


def _obj(properties: dict, required: bool | list[str] = True, **extra) -> dict:
    """An object schema; ``required=True`` requires every property (the responses always
    carry all their keys, null when unset)."""
    out = {"type": "object", "properties": properties, **extra}
    if required:
        out["required"] = list(properties) if required is True else required
    return out


NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_OBJ = {"type": ["object", "null"]}
MLFLOW = _obj({"run_id": NULLABLE_STR, "experiment_id": NULLABLE_STR, "url": NULLABLE_STR})


# What body.py refuses in any body (400), said in the schemas of the bodies: integers of at
# most MAX_INT_DIGITS digits, no NUL character in a string or a key (PostgreSQL cannot store
# one). Query strings say the second too (service/api/__init__.py refuses a NUL there).
INT_BOUND = 10 ** MAX_INT_DIGITS - 1
NO_NUL = "^[^\\u0000]*$"


def _storable(node):
    """``node`` (a JSON Schema, walked in place) with body.py's limits declared: a bound on
    every integer that has none, a NUL-free pattern on every free-form string and key."""
    if isinstance(node, list):
        for item in node:
            _storable(item)
        return node
    if not isinstance(node, dict):
        return node
    types = node.get("type")
    types = [types] if isinstance(types, str) else types or []
    free = not any(k in node for k in ("enum", "const", "pattern", "format", "$ref"))
    if "integer" in types:
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["maximum"] = INT_BOUND
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = -INT_BOUND
    if "string" in types and free:
        node["pattern"] = NO_NUL
    if "object" in types and node.get("additionalProperties") not in (None, False):
        node.setdefault("propertyNames", {"pattern": NO_NUL})
    for key, value in node.items():
        if key in ("properties", "$defs", "patternProperties"):
            for sub in value.values():
                _storable(sub)
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "not",
                     "prefixItems"):
            _storable(value)
    return node


def _job_spec_schema() -> tuple[dict, dict]:
    spec = JobSpec.model_json_schema(ref_template=REF)
    defs = spec.pop("$defs", {})
    # "optimizer": "adam" is accepted as {"name": "adam"} (CompileSpec's shorthand).
    optimizer = defs["CompileSpec"]["properties"]["optimizer"]
    defs["CompileSpec"]["properties"]["optimizer"] = {
        "anyOf": [optimizer, {"type": "string", "enum": list(OPTIMIZERS)}],
        "description": "an optimizer object, or just its name"}
    return spec, defs


def _schemas() -> dict:
    spec_schema, defs = _job_spec_schema()
    error = _obj({"error": _obj({
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": _obj({
            "loc": {"type": "string"}, "msg": {"type": "string"}, "value": {}},
            required=["loc", "msg"])}})})
    job = _obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "experiment": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES}, "queue": {"type": "string"},
        "spec": {"$ref": REF.format(model="JobSpec"),
                 "description": "the spec as validated: every default filled in"},
        "plan": {"type": "object", "description": "input_dim, n_train, n_val, batch_size, "
                 "steps_per_epoch, total_updates, total_params, gradient_descent, ..."},
        "progress": _obj({
            "epoch": {"type": "integer"}, "epochs": {"type": "integer"},
            "metrics": {"type": "object"}, "elapsed_s": {"type": ["number", "null"]},
            "eta_s": {"type": ["number", "null"]}}, required=["epoch", "epochs", "metrics"]),
        "summary": NULLABLE_OBJ,
        "metrics_on": {"type": "string", "enum": ["validation", "training"],
                       "description": "the data the job's metrics (progress, summary, MLflow) "
                       "describe: 'training' when it holds no data out, so they say how well "
                       "it fits its training set, not how it does on new data"},
        "mlflow": MLFLOW,
        "error": NULLABLE_OBJ, "attempts": {"type": "integer"},
        "cancel_requested": {"type": "boolean"},
        "sweep_id": NULLABLE_STR, "trial_number": {"type": ["integer", "null"]},
        "repeat": {"type": ["integer", "null"]}, "trial_params": NULLABLE_OBJ,
        "trained_by": {"type": ["string", "null"],
                       "description": "the job whose training this job was recorded from"},
        "worker": NULLABLE_STR,
        "created_at": {"type": "string"},
        "dispatched_at": {"type": ["string", "null"],
                          "description": "null while the broker was unreachable"},
        "started_at": NULLABLE_STR, "finished_at": NULLABLE_STR})
    page = lambda key, item: _obj({key: {"type": "array", "items": {"$ref": REF.format(
        model=item)}}, "next_cursor": {"type": ["string", "null"],
                                       "description": "pass as ?cursor= for the next page"}})
    history = _obj({"job_id": {"type": "string"}, "status": {"type": "string", "enum": STATUSES},
                    "epochs": {"type": "array", "items": _obj(
                        {"epoch": {"type": "integer"}},
                        # null: a non-finite value (a diverged loss), which JSON cannot carry
                        additionalProperties={"type": ["number", "null"]})
                    }})
    sweep_schema = SweepSpec.model_json_schema(ref_template=REF)
    defs.update(sweep_schema.pop("$defs", {}))
    sweep_schema["properties"]["base"] = {"$ref": REF.format(model="JobSpec")}
    _storable(spec_schema)
    _storable(sweep_schema)
    for model_schema in defs.values():
        _storable(model_schema)
    trial = _obj({
        "number": {"type": "integer"}, "name": {"type": "string"},
        "params": {"type": "object"},
        "state": {"type": "string", "enum": [*STATUSES, "pending"]},
        "objective": {"type": ["number", "null"], "description": "mean over seeds"},
        "objective_std": {"type": ["number", "null"]},
        "objective_values": {"type": "array", "items": {"type": "number"}},
        "trained_by": {"type": ["string", "null"],
                       "description": "the job whose training this trial was recorded from"},
        "jobs": {"type": "array", "items": {"type": "object"}}},
        required=["number", "name", "params", "state", "objective", "jobs"])
    sweep = _obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "experiment": {"type": "string"},
        "status": {"type": "string", "enum": SWEEP_STATUSES},
        "method": {"type": "string"}, "objective": {"type": "object"},
        "max_trials": {"type": ["integer", "null"]}, "max_parallel": {"type": "integer"},
        "repeats": {"type": "integer"}, "early_stopping": NULLABLE_OBJ,
        "share_epochs": _obj({"on": {"type": "boolean"}, "why": {"type": "string"}}),
        "pack": _obj({"on": {"type": "boolean"}, "why": {"type": "string"},
                      "trainings": {"type": ["integer", "null"]}}),
        "progress": _obj({
            "done": {"type": "integer"}, "total": {"type": "integer"},
            "running": {"type": "integer"}, "queued": {"type": "integer"},
            "trainings_running": {"type": "integer"}}),
        "best": NULLABLE_OBJ,
        "spec": {"type": "object", "description": "the sweep as validated"},
        "trials": {"type": "array", "items": {"$ref": REF.format(model="Trial")},
                   "description": "one sweep only, not in the list"},
        "mlflow": MLFLOW, "report": NULLABLE_OBJ, "error": NULLABLE_OBJ,
        "cancel_requested": {"type": "boolean"},
        "created_at": {"type": "string"}, "started_at": NULLABLE_STR,
        "finished_at": NULLABLE_STR},
        required=["id", "name", "experiment", "status", "method", "objective", "progress",
                  "best", "spec", "mlflow", "error", "created_at", "finished_at"])
    column = _obj({"name": {"type": "string"}, "numeric": {"type": "boolean"},
                   "integer": {"type": "boolean"}, "n_unique": {"type": ["integer", "null"]}})
    summary = {
        "id": {"type": "string"}, "name": {"type": "string"}, "filename": NULLABLE_STR,
        "size_bytes": {"type": "integer"}, "sha256": {"type": "string"},
        "n_rows": {"type": "integer"}, "n_columns": {"type": "integer"},
        "created_at": NULLABLE_STR,
        "use": {"type": "object", "description": "the spec's dataset object for it"}}
    dataset = _obj({**summary, "columns": {"type": "array", "items": column}})
    dataset_summary = _obj(summary, description="a dataset in a listing: no column profiles")
    component = _obj({"ok": {"type": "boolean"}, "detail": {"type": "string"}})
    health = _obj({"status": {"type": "string", "enum": ["ok", "degraded"]},
                   "components": _obj({"database": component, "broker": component,
                                       "mlflow": component}),
                   "mlflow_ui": {"type": "string"}})
    return {**defs, "JobSpec": spec_schema, "Job": job, "JobList": page("jobs", "Job"),
            "History": history, "SweepSpec": sweep_schema, "Sweep": sweep,
            "SweepList": page("sweeps", "Sweep"), "Trial": trial, "Dataset": dataset,
            "DatasetSummary": dataset_summary,
            "DatasetList": _obj({"datasets": {"type": "array", "items": {
                "$ref": REF.format(model="DatasetSummary")}}}),
            "Health": health, "Error": error}


def _resp(desc: str, schema: str | None = None) -> dict:
    out: dict = {"description": desc}
    if schema:
        out["content"] = {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}
    return out


ERRORS = {"400": _resp("malformed request", "Error"), "401": _resp("no or bad token", "Error")}
BODY_ERRORS = {"413": _resp("body too large (1 MiB)", "Error"),
               "415": _resp("not JSON or YAML by its Content-Type", "Error")}
REDIRECT = {"description": "see the Location header"}
# A job or sweep is named by its id or a unique prefix of it (service/store/ids.py).
_BY_PREFIX = ("the id, or a unique prefix of it of at least 4 characters (409 ambiguous_id "
              "names the candidates otherwise)")
SWEEP_ID = [{"name": "sweep_id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": _BY_PREFIX}]
JOB_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": _BY_PREFIX}]
AMBIGUOUS = {"409": _resp("the id prefix matches several, or is too short; the details name "
                          "the candidates", "Error")}
DS_ID = [{"name": "dataset_id", "in": "path", "required": True, "schema": {"type": "string"}}]


# The group each path's operations are listed under on the docs page (its deep links read
# #/<tag>/<operationId>); paths not listed are "service".
TAGS = [{"name": "jobs", "description": "Submit a training job, follow it, cancel it"},
        {"name": "sweeps", "description": "Many jobs over a grid or a search space"},
        {"name": "datasets", "description": "Upload CSV files that specs can train on"},
        {"name": "service", "description": "Health, this document and its page"}]


def _tagged(paths: dict) -> dict:
    for path, ops in paths.items():
        tag = next((t["name"] for t in TAGS[:3] if path.startswith(f"/api/v1/{t['name']}")),
                   "service")
        for op in ops.values():
            op["tags"] = [tag]
    return paths


def document(token_required: bool | None = None) -> dict:
    """The document; ``token_required`` (the API serves it with its own setting) makes the
    bearer token required (True) or absent (False) rather than optional (None)."""
    return {**_document(token_required), "tags": TAGS}


def _document(token_required: bool | None) -> dict:
    q = lambda name, schema, desc="": {"name": name, "in": "query", "schema": schema,
                                       "description": desc}
    text = {"type": "string", "pattern": NO_NUL}
    return {
        "openapi": "3.1.0",
        "info": {"title": "kerasyard", "version": __version__,
                 "description": "Submit Keras training jobs as data; every epoch in MLflow."},
        "servers": [{"url": "/"}],
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "the server's KERASYARD_API_TOKEN, sent as "
                                      "`Authorization: Bearer <token>`; only when it is set"}}},
        "security": ([{}, {"bearer": []}] if token_required is None else
                     [{"bearer": []}] if token_required else [{}]),
        "paths": _tagged({
            "/api/v1/jobs": {
                "post": {"summary": "Validate, store and queue a job", "operationId": "createJob",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": REF.format(model="JobSpec")},
                                                  "example": JOB_EXAMPLE},
                             "application/yaml": {"schema": {"$ref": REF.format(model="JobSpec")},
                                                  "example": JOB_EXAMPLE}}},
                         "responses": {"202": _resp("queued", "Job"), **ERRORS, **BODY_ERRORS,
                                       "422": _resp("invalid spec; details name each field",
                                                    "Error")}},
                "get": {"summary": "List jobs, newest first", "operationId": "listJobs",
                        "parameters": [q("status", {"type": "string", "enum": STATUSES}),
                                       q("experiment", text),
                                       q("sweep_id", text, "the sweep's id or a unique prefix "
                                         "of it"),
                                       q("limit", {"type": "integer", "minimum": 1,
                                                   "maximum": 500, "default": 50}),
                                       q("cursor", text, "next_cursor of the previous page")],
                        "responses": {"200": _resp("a page of jobs, newest first", "JobList"),
                                      **ERRORS, **AMBIGUOUS}}},
            "/api/v1/jobs/{job_id}": {"get": {
                "summary": "One job with live progress and its MLflow link",
                "operationId": "getJob", "parameters": JOB_ID,
                "responses": {"200": _resp("the job", "Job"), **ERRORS,
                              "404": _resp("no such job", "Error"), **AMBIGUOUS}}},
            "/api/v1/jobs/{job_id}/history": {"get": {
                "summary": "Per-epoch metrics", "operationId": "jobHistory", "parameters": JOB_ID,
                "responses": {"200": _resp("one entry per finished epoch", "History"),
                              **ERRORS, "404": _resp("no such job", "Error"), **AMBIGUOUS}}},
            "/api/v1/jobs/{job_id}/cancel": {"post": {
                "summary": "Cooperative cancel (stops at the next epoch boundary)",
                "operationId": "cancelJob", "parameters": JOB_ID,
                "responses": {"202": _resp("cancel requested", "Job"), **ERRORS,
                              "404": _resp("no such job", "Error"),
                              "409": _resp("the job has already ended (illegal_state), or the id "
                                           "prefix is ambiguous (ambiguous_id)", "Error")}}},
            "/api/v1/sweeps": {
                "post": {"summary": "Validate a sweep, store it, start its first trials",
                         "operationId": "createSweep",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": REF.format(model="SweepSpec")},
                                                  "example": SWEEP_EXAMPLE},
                             "application/yaml": {"schema": {"$ref": REF.format(model="SweepSpec")},
                                                  "example": SWEEP_EXAMPLE}}},
                         "responses": {"202": _resp("created", "Sweep"), **ERRORS,
                                       **BODY_ERRORS,
                                       "422": _resp("invalid sweep; details name each field",
                                                    "Error")}},
                "get": {"summary": "List sweeps, newest first", "operationId": "listSweeps",
                        "parameters": [q("status", {"type": "string", "enum": SWEEP_STATUSES}),
                                       q("limit", {"type": "integer", "minimum": 1,
                                                   "maximum": 500, "default": 50}),
                                       q("cursor", text, "next_cursor of the previous page")],
                        "responses": {"200": _resp("a page of sweeps (without trials), newest "
                                                    "first", "SweepList"),
                                      **ERRORS}}},
            "/api/v1/sweeps/{sweep_id}": {"get": {
                "summary": "A sweep: its trials, their state and objective, the best so far",
                "operationId": "getSweep", "parameters": SWEEP_ID,
                "responses": {"200": _resp("the sweep", "Sweep"), **ERRORS,
                              "404": _resp("no such sweep", "Error"), **AMBIGUOUS}}},
            "/api/v1/sweeps/{sweep_id}/cancel": {"post": {
                "summary": "Cancel queued and running trials", "operationId": "cancelSweep",
                "parameters": SWEEP_ID,
                "responses": {"202": _resp("cancel requested", "Sweep"), **ERRORS,
                              "404": _resp("no such sweep", "Error"),
                              "409": _resp("the sweep has already ended (illegal_state), or the "
                                           "id prefix is ambiguous (ambiguous_id)", "Error")}}},
            "/api/v1/datasets": {
                "post": {"summary": "Upload a CSV (multipart field 'file' or a text/csv body)",
                         "operationId": "uploadDataset",
                         "parameters": [q("name", text)],
                         "requestBody": {"required": True, "content": {
                             "multipart/form-data": {"schema": {
                                 "type": "object", "required": ["file"], "properties": {
                                     "file": {"type": "string", "format": "binary",
                                              "minLength": 1},
                                     "name": text}}},
                             "text/csv": {"schema": {"type": "string", "minLength": 1}}}},
                         "responses": {"201": _resp("the dataset with column profile", "Dataset"),
                                       **ERRORS, "413": _resp("file too large", "Error"),
                                       "422": _resp("not a usable CSV", "Error")}},
                "get": {"summary": "List uploaded datasets", "operationId": "listDatasets",
                        "parameters": [q("limit", {"type": "integer", "minimum": 1,
                                                   "maximum": 1000, "default": 100})],
                        "responses": {"200": _resp("uploaded datasets, newest first",
                                                   "DatasetList"), **ERRORS}}},
            "/api/v1/datasets/{dataset_id}": {"get": {
                "summary": "One uploaded dataset", "operationId": "getDataset",
                "parameters": DS_ID, "responses": {"200": _resp("the dataset", "Dataset"), **ERRORS,
                                                   "404": _resp("no such dataset", "Error")}}},
            "/api/v1/health": {"get": {
                "summary": "Database, broker and MLflow reachability", "operationId": "health",
                "security": [{}], "responses": {"200": _resp("all reachable", "Health"),
                                                "503": _resp("something is down", "Health")}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [{}],
                                             "operationId": "openapi",
                                             "responses": {"200": {"description": "OpenAPI", "content": {
                                                 "application/json": {"schema": {
                                                     "type": "object", "required": [
                                                         "openapi", "info", "paths",
                                                         "components"]}}}}}}},
            "/api/v1/docs": {"get": {"summary": "Swagger UI over this document",
                                     "security": [{}], "operationId": "docs",
                                     "responses": {"200": {"description": "HTML", "content": {
                                         "text/html": {"schema": {"type": "string"}}}}}}},
            "/api/v1/docs/{asset}": {"get": {
                "summary": "A file of the docs page (Swagger UI, from flask-swagger-ui)",
                "security": [{}], "operationId": "docsAsset",
                "parameters": [{"name": "asset", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": list(DOCS_ASSETS)}}],
                "responses": {"200": {"description": "the file", "content": {
                    ctype: {"schema": {"type": "string"}} for ctype in
                    dict.fromkeys(DOCS_ASSETS.values())}},
                    "404": _resp("not a file of the page", "Error")}}},
            "/openapi.json": {"get": {"summary": "Redirects to /api/v1/openapi.json",
                                      "security": [{}], "operationId": "openapiRoot",
                                      "responses": {"302": REDIRECT}}},
            "/docs": {"get": {"summary": "Redirects to /api/v1/docs", "security": [{}],
                              "operationId": "docsRoot", "responses": {"302": REDIRECT}}},
        }),
    }
