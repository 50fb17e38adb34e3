"""The OpenAPI 3.1 document: every route, with the job spec schema generated from pydantic."""

from __future__ import annotations

from service import __version__
from service.api.schemas import NO_NUL, REF, schemas
from service.jobs import STATUSES
from service.store.paging import CURSOR_PATTERN
from service.sweeps.commands import SWEEP_STATUSES

# The docs page's files (service/api/docs.py serves them) and the content type of each.
DOCS_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
               "favicon-32x32.png": "image/png"}

# Request body examples; /api/v1/docs (Swagger UI) prefills its request bodies from them.
# Embedded rather than read from examples/ because the API image may be installed without the
# repository's examples.
# tests/unit/test_docs_page.py checks they validate and still match those files.
# The lecture's data: 250 samples, 50 held out (validation_split 0.2), so the lecture's 200
# training samples (40 updates an epoch at batch size 5) are scored on data they were not
# fitted to.
_LECTURE_BASE = {
    "dataset": {"kind": "synthetic", "name": "classification",
                "n_samples": 250, "n_features": 50, "n_classes": 10, "seed": 0},
    "model": {"layers": [{"type": "dense", "units": 64, "activation": "relu"},
                         {"type": "dense", "units": 28, "activation": "relu"},
                         {"type": "dense", "units": 10, "activation": "softmax"}]},
    "compile": {"loss": "sparse_categorical_crossentropy",
                "optimizer": {"name": "sgd", "learning_rate": 0.01},
                "metrics": ["accuracy"]},
}
# examples/lecture_mlp.json with 20 epochs instead of 1000, so "Execute" is quick.
JOB_EXAMPLE = {"name": "lecture-mlp", "experiment": "lecture", **_LECTURE_BASE,
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
    "repeats": 3,
    "max_parallel": 2,
}


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
TAGS = [{"name": "jobs", "description": "Submit a training job, follow it, pause, resume "
                                        "or cancel it"},
        {"name": "sweeps", "description": "Many jobs over a grid or a search space"},
        {"name": "datasets", "description": "Upload CSV or .npz files that specs can train on"},
        {"name": "models", "description": "Upload .keras models of Keras's built-in layers "
                                          "that specs can train"},
        {"name": "service", "description": "Health, this document and its page"}]


def _tagged(paths: dict) -> dict:
    for path, ops in paths.items():
        tag = next((t["name"] for t in TAGS[:-1] if path.startswith(f"/api/v1/{t['name']}")),
                   "service")
        for op in ops.values():
            op["tags"] = [tag]
    return paths


def document(token_required: bool | None = None) -> dict:
    """The document; ``token_required`` (the API serves it with its own setting) makes the
    bearer token required (True) or absent (False) rather than optional (None)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "kerasyard", "version": __version__,
                 "description": "Submit Keras training jobs as data; every epoch in MLflow."},
        "servers": [{"url": "/"}],
        "components": {"schemas": schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "the server's KERASYARD_API_TOKEN, sent as "
                                      "`Authorization: Bearer <token>`; only when it is set"}}},
        "security": ([{}, {"bearer": []}] if token_required is None else
                     [{"bearer": []}] if token_required else [{}]),
        "paths": _tagged({**_job_paths(), **_sweep_paths(), **_dataset_paths(),
                          **_model_paths(), **_service_paths()}),
        "tags": TAGS,
    }


def _query(name: str, schema: dict, desc: str = "") -> dict:
    return {"name": name, "in": "query", "schema": schema, "description": desc}


# A free-form query string: body.py's rule for strings, no NUL (service/api/__init__.py).
TEXT = {"type": "string", "pattern": NO_NUL}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
# The listings' cursor as service/store/paging.py mints and reads it.
CURSOR = _query("cursor", {"type": "string", "pattern": CURSOR_PATTERN},
                "next_cursor of the previous page (empty or left out: the first page); "
                "any other string is a 400")
# What service/uploads/datasets.py reads from an upload, short of parsing it: a UTF-8 CSV whose
# header row names each column once, then at least 2 data rows (rows of blank cells do not
# count) with as many fields as the header; at most 1000 columns. The text/csv schema's pattern
# says the part a pattern can: three lines, each with a character that is not blank.
CSV_RULES = ("a UTF-8 CSV: a header row naming each column once, then at least 2 data rows "
             "(blank rows are skipped) with as many fields as the header, at most 1000 columns "
             "and KERASYARD_MAX_UPLOAD_BYTES bytes; 422 invalid_dataset otherwise")
CSV_PATTERN = "\\S[\\s\\S]*[\\r\\n][\\s\\S]*\\S[\\s\\S]*[\\r\\n][\\s\\S]*\\S"
# What service/uploads/npz.py reads from an .npz upload.
NPZ_RULES = ("an .npz (np.savez or np.savez_compressed) holding exactly the arrays x (integer "
             "or float, shape (samples, ...) with at most 4 sample axes; float finite; integer "
             "x is token ids) and y (1-D, one target per sample: integer for classes, float "
             "for a regression), at least 2 samples; no object arrays; at most "
             "KERASYARD_MAX_UPLOAD_BYTES bytes and 8 times that decompressed; 422 "
             "invalid_dataset otherwise")


def _spec_body(model: str, example: dict) -> dict:
    """A spec as the body, in JSON or YAML."""
    return {"required": True, "content": {
        ctype: {"schema": {"$ref": REF.format(model=model)}, "example": example}
        for ctype in ("application/json", "application/yaml")}}


def _job_paths() -> dict:
    return {
        "/api/v1/jobs": {
            "post": {"summary": "Validate, store and queue a job", "operationId": "createJob",
                     "requestBody": _spec_body("JobSpec", JOB_EXAMPLE),
                     "responses": {"202": _resp("queued", "Job"), **ERRORS, **BODY_ERRORS,
                                   "422": _resp("invalid spec; details name each field",
                                                "Error")}},
            "get": {"summary": "List jobs, newest first", "operationId": "listJobs",
                    "parameters": [_query("status", {"type": "string", "enum": STATUSES}),
                                   _query("experiment", TEXT),
                                   _query("sweep_id", TEXT, "the sweep's id or a unique prefix "
                                          "of it"),
                                   _query("standalone", {"type": "boolean"}, "true: only the "
                                          "jobs submitted on their own; false: only sweeps' "
                                          "trials; left out: both"),
                                   _query("limit", LIMIT), CURSOR],
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
        "/api/v1/jobs/{job_id}/pause": {"post": {
            "summary": "Pause: a queued job now, a running one at its next epoch boundary "
                       "(with a checkpoint; the worker is freed)",
            "operationId": "pauseJob", "parameters": JOB_ID,
            "responses": {"200": _resp("paused already; nothing changed", "Job"),
                          "202": _resp("paused (a queued job), or the pause requested (a "
                                       "running one: pause_requested, then paused)", "Job"),
                          **ERRORS, "404": _resp("no such job", "Error"),
                          "409": _resp("the job has ended, or it is a trial recorded from "
                                       "another job's training (illegal_state); or the id "
                                       "prefix is ambiguous (ambiguous_id)", "Error")}}},
        "/api/v1/jobs/{job_id}/resume": {"post": {
            "summary": "Resume a paused job: queued again for the next worker",
            "operationId": "resumeJob", "parameters": JOB_ID,
            "responses": {"202": _resp("queued again (or, for a running job whose pause was "
                                       "still pending, the pause withdrawn)", "Job"),
                          **ERRORS, "404": _resp("no such job", "Error"),
                          "409": _resp("the job is not paused (the message names its status), "
                                       "or it is recorded from another job's training or a "
                                       "trial of a paused sweep (illegal_state); or the id "
                                       "prefix is ambiguous (ambiguous_id)", "Error")}}},
    }


def _sweep_paths() -> dict:
    return {
        "/api/v1/sweeps": {
            "post": {"summary": "Validate a sweep, store it, start its first trials",
                     "operationId": "createSweep",
                     "requestBody": _spec_body("SweepSpec", SWEEP_EXAMPLE),
                     "responses": {"202": _resp("created", "Sweep"), **ERRORS, **BODY_ERRORS,
                                   "422": _resp("invalid sweep; details name each field",
                                                "Error")}},
            "get": {"summary": "List sweeps, newest first", "operationId": "listSweeps",
                    "parameters": [_query("status", {"type": "string", "enum": SWEEP_STATUSES}),
                                   _query("limit", LIMIT), CURSOR],
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
        "/api/v1/sweeps/{sweep_id}/pause": {"post": {
            "summary": "Pause a sweep: its trials pause and no new ones start",
            "operationId": "pauseSweep", "parameters": SWEEP_ID,
            "responses": {"200": _resp("paused already; nothing changed", "Sweep"),
                          "202": _resp("paused: queued trials at once, running ones at their "
                                       "next epoch boundary", "Sweep"),
                          **ERRORS, "404": _resp("no such sweep", "Error"),
                          "409": _resp("the sweep has already ended (illegal_state), or the "
                                       "id prefix is ambiguous (ambiguous_id)", "Error")}}},
        "/api/v1/sweeps/{sweep_id}/resume": {"post": {
            "summary": "Resume a paused sweep: its paused trials queue again, new ones start",
            "operationId": "resumeSweep", "parameters": SWEEP_ID,
            "responses": {"202": _resp("resumed", "Sweep"),
                          **ERRORS, "404": _resp("no such sweep", "Error"),
                          "409": _resp("the sweep is not paused (illegal_state; the message "
                                       "names its status), or the id prefix is ambiguous "
                                       "(ambiguous_id)", "Error")}}},
    }


def _dataset_paths() -> dict:
    return {
        "/api/v1/datasets": {
            "post": {"summary": "Upload a CSV or an .npz (multipart field 'file', or a text/csv "
                                "or application/x-npz body)",
                     "operationId": "uploadDataset",
                     "parameters": [_query("name", TEXT)],
                     "requestBody": {"required": True, "description": CSV_RULES, "content": {
                         "multipart/form-data": {"schema": {
                             "type": "object", "required": ["file"], "properties": {
                                 "file": {"type": "string", "format": "binary",
                                          "minLength": 1, "description":
                                              f"{CSV_RULES}; or, named *.npz, {NPZ_RULES}"},
                                 "name": TEXT}}},
                         "text/csv": {"schema": {"type": "string", "minLength": 5,
                                                 "pattern": CSV_PATTERN,
                                                 "description": CSV_RULES}},
                         "application/x-npz": {"schema": {
                             "type": "string", "format": "binary", "minLength": 1,
                             "description": NPZ_RULES}}}},
                     "responses": {"201": _resp("the dataset with column profile", "Dataset"),
                                   **ERRORS, "413": _resp("file too large", "Error"),
                                   "422": _resp("not a usable CSV or .npz; the details name "
                                                "the array or field", "Error")}},
            "get": {"summary": "List uploaded datasets", "operationId": "listDatasets",
                    "parameters": [_query("limit", {"type": "integer", "minimum": 1,
                                                    "maximum": 1000, "default": 100})],
                    "responses": {"200": _resp("uploaded datasets, newest first",
                                               "DatasetList"), **ERRORS}}},
        "/api/v1/datasets/{dataset_id}": {"get": {
            "summary": "One uploaded dataset", "operationId": "getDataset",
            "parameters": DS_ID, "responses": {"200": _resp("the dataset", "Dataset"), **ERRORS,
                                               "404": _resp("no such dataset", "Error")}}},
    }


MODEL_ID = [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}]
# What service/uploads/keras_file.py accepts, short of reading it.
KERAS_RULES = (
    "a .keras file (Keras 3's model.save) of a Sequential or Functional model of Keras's "
    "built-in layers in kerasyard's catalogue, at most KERASYARD_MAX_UPLOAD_BYTES bytes "
    "unpacked; 422 invalid_model naming each problem otherwise (a Lambda layer or any custom "
    "object: Python code, which kerasyard never runs), and nothing is stored. Its weights are "
    "the starting weights of every job that trains it.")
KERAS_FILE = {"type": "string", "format": "binary", "minLength": 1, "description": KERAS_RULES}


def _model_paths() -> dict:
    return {
        "/api/v1/models": {
            "post": {"summary": "Upload a .keras model (an application/x-keras body or the "
                                "multipart field 'file'); a job trains it with "
                                "model: {uploaded: id}",
                     "operationId": "uploadModel",
                     "parameters": [_query("name", TEXT)],
                     "requestBody": {"required": True, "description": KERAS_RULES, "content": {
                         "application/x-keras": {"schema": KERAS_FILE},
                         "application/octet-stream": {"schema": KERAS_FILE},
                         "multipart/form-data": {"schema": {
                             "type": "object", "required": ["file"], "properties": {
                                 "file": KERAS_FILE, "name": TEXT}}}}},
                     "responses": {"201": _resp("the model, its layers as kerasyard's specs",
                                                "Model"),
                                   **ERRORS, "413": _resp("file too large", "Error"),
                                   "415": _resp("neither application/x-keras nor multipart",
                                                "Error"),
                                   "422": _resp("not a .keras file kerasyard can train; the "
                                                "details name each problem", "Error")}},
            "get": {"summary": "List uploaded models", "operationId": "listModels",
                    "parameters": [_query("limit", {"type": "integer", "minimum": 1,
                                                    "maximum": 1000, "default": 100})],
                    "responses": {"200": _resp("uploaded models, newest first", "ModelList"),
                                  **ERRORS}}},
        "/api/v1/models/{model_id}": {"get": {
            "summary": "One uploaded model", "operationId": "getModel",
            "parameters": MODEL_ID, "responses": {"200": _resp("the model", "Model"), **ERRORS,
                                                  "404": _resp("no such model", "Error")}}},
    }


def _service_paths() -> dict:
    """Health, this document, its page and the page's files; none asks for the token."""
    return {
        "/api/v1/health": {"get": {
            "summary": "Database, broker and MLflow reachability", "operationId": "health",
            "security": [{}], "responses": {"200": _resp("all reachable", "Health"),
                                            "503": _resp("something is down", "Health")}}},
        "/api/v1/openapi.json": {"get": {
            "summary": "This document", "security": [{}], "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI", "content": {
                "application/json": {"schema": {"type": "object", "required": [
                    "openapi", "info", "paths", "components"]}}}}}}},
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
    }
