"""The OpenAPI 3.1 document: every route, with the job spec schema generated from pydantic."""

from __future__ import annotations

from .. import __version__
from ..jobs import STATUSES
from ..spec import JobSpec
from ..sweep_spec import SweepSpec
from ..sweeps.commands import SWEEP_STATUSES

REF = "#/components/schemas/{model}"

# Request body examples; /api/v1/docs prefills its forms from them. Embedded rather than read
# from examples/ because the API image may be installed without the repository's examples.
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
# examples/lecture_mlp.json with 20 epochs instead of 1000, so "Send" is quick.
JOB_EXAMPLE = {"name": "lecture-mlp", "experiment": "lecture", **_LECTURE_BASE,
               "fit": {"batch_size": 5, "epochs": 20, "validation_split": 0.0, "seed": 0}}
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


def _schemas() -> dict:
    spec_schema = JobSpec.model_json_schema(ref_template=REF)
    defs = spec_schema.pop("$defs", {})
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "properties": {
            "loc": {"type": "string"}, "msg": {"type": "string"}, "value": {}}}}}}}}
    job = {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "experiment": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES}, "queue": {"type": "string"},
        "spec": {"$ref": REF.format(model="JobSpec")},
        "plan": {"type": "object", "description": "input_dim, n_train, n_val, batch_size, "
                 "steps_per_epoch, total_updates, total_params, gradient_descent, ..."},
        "progress": {"type": "object", "properties": {
            "epoch": {"type": "integer"}, "epochs": {"type": "integer"},
            "metrics": {"type": "object"}, "eta_s": {"type": ["number", "null"]}}},
        "summary": {"type": ["object", "null"]},
        "mlflow": {"type": "object", "properties": {
            "run_id": {"type": ["string", "null"]}, "experiment_id": {"type": ["string", "null"]},
            "url": {"type": ["string", "null"]}}},
        "error": {"type": ["object", "null"]}, "attempts": {"type": "integer"},
        "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]}}}
    sweep_schema = SweepSpec.model_json_schema(ref_template=REF)
    defs.update(sweep_schema.pop("$defs", {}))
    sweep_schema["properties"]["base"] = {"$ref": REF.format(model="JobSpec")}
    trial = {"type": "object", "properties": {
        "number": {"type": "integer"}, "name": {"type": "string"},
        "params": {"type": "object"},
        "state": {"type": "string", "enum": [*STATUSES, "pending"]},
        "objective": {"type": ["number", "null"], "description": "mean over seeds"},
        "objective_std": {"type": ["number", "null"]},
        "trained_by": {"type": ["string", "null"],
                       "description": "the job whose training this trial was recorded from"},
        "jobs": {"type": "array", "items": {"type": "object"}}}}
    sweep = {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "status": {"type": "string", "enum": SWEEP_STATUSES},
        "method": {"type": "string"}, "objective": {"type": "object"},
        "progress": {"type": "object", "properties": {
            "done": {"type": "integer"}, "total": {"type": "integer"},
            "running": {"type": "integer"}, "queued": {"type": "integer"}}},
        "best": {"type": ["object", "null"]},
        "trials": {"type": "array", "items": {"$ref": REF.format(model="Trial")}},
        "mlflow": {"type": "object"}, "error": {"type": ["object", "null"]},
        "created_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]}}}
    return {**defs, "JobSpec": spec_schema, "Job": job, "SweepSpec": sweep_schema,
            "Sweep": sweep, "Trial": trial, "Error": error}


def _resp(desc: str, schema: str | None = None) -> dict:
    out: dict = {"description": desc}
    if schema:
        out["content"] = {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}
    return out


ERRORS = {"400": _resp("malformed request", "Error"), "401": _resp("no or bad token", "Error")}
SWEEP_ID = [{"name": "sweep_id", "in": "path", "required": True, "schema": {"type": "string"}}]
JOB_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
DS_ID = [{"name": "dataset_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def document() -> dict:
    q = lambda name, schema, desc="": {"name": name, "in": "query", "schema": schema,
                                       "description": desc}
    return {
        "openapi": "3.1.0",
        "info": {"title": "kerasyard", "version": __version__,
                 "description": "Submit Keras training jobs as data; every epoch in MLflow."},
        "servers": [{"url": "/"}],
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "only when KERASYARD_API_TOKEN is set"}}},
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/v1/jobs": {
                "post": {"summary": "Validate, store and queue a job", "operationId": "createJob",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": REF.format(model="JobSpec")},
                                                  "example": JOB_EXAMPLE},
                             "application/yaml": {"schema": {"$ref": REF.format(model="JobSpec")},
                                                  "example": JOB_EXAMPLE}}},
                         "responses": {"202": _resp("queued", "Job"), **ERRORS,
                                       "413": _resp("body too large", "Error"),
                                       "422": _resp("invalid spec; details name each field",
                                                    "Error")}},
                "get": {"summary": "List jobs, newest first", "operationId": "listJobs",
                        "parameters": [q("status", {"type": "string", "enum": STATUSES}),
                                       q("experiment", {"type": "string"}),
                                       q("sweep_id", {"type": "string"}),
                                       q("limit", {"type": "integer", "minimum": 1,
                                                   "maximum": 500, "default": 50}),
                                       q("cursor", {"type": "string"},
                                         "next_cursor of the previous page")],
                        "responses": {"200": {"description": "{jobs: [Job], next_cursor}"},
                                      **ERRORS}}},
            "/api/v1/jobs/{job_id}": {"get": {
                "summary": "One job with live progress and its MLflow link",
                "operationId": "getJob", "parameters": JOB_ID,
                "responses": {"200": _resp("the job", "Job"), "404": _resp("no such job", "Error")}}},
            "/api/v1/jobs/{job_id}/history": {"get": {
                "summary": "Per-epoch metrics", "operationId": "jobHistory", "parameters": JOB_ID,
                "responses": {"200": {"description": "{job_id, status, epochs: [{epoch, ...}]}"},
                              "404": _resp("no such job", "Error")}}},
            "/api/v1/jobs/{job_id}/cancel": {"post": {
                "summary": "Cooperative cancel (stops at the next epoch boundary)",
                "operationId": "cancelJob", "parameters": JOB_ID,
                "responses": {"202": _resp("cancel requested", "Job"),
                              "404": _resp("no such job", "Error"),
                              "409": _resp("the job has already ended", "Error")}}},
            "/api/v1/sweeps": {
                "post": {"summary": "Validate a sweep, store it, start its first trials",
                         "operationId": "createSweep",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": REF.format(model="SweepSpec")},
                                                  "example": SWEEP_EXAMPLE},
                             "application/yaml": {"schema": {"$ref": REF.format(model="SweepSpec")},
                                                  "example": SWEEP_EXAMPLE}}},
                         "responses": {"202": _resp("created", "Sweep"), **ERRORS,
                                       "422": _resp("invalid sweep; details name each field",
                                                    "Error")}},
                "get": {"summary": "List sweeps, newest first", "operationId": "listSweeps",
                        "parameters": [q("status", {"type": "string", "enum": SWEEP_STATUSES}),
                                       q("limit", {"type": "integer", "minimum": 1,
                                                   "maximum": 500, "default": 50}),
                                       q("cursor", {"type": "string"})],
                        "responses": {"200": {"description": "{sweeps: [Sweep], next_cursor}"},
                                      **ERRORS}}},
            "/api/v1/sweeps/{sweep_id}": {"get": {
                "summary": "A sweep: its trials, their state and objective, the best so far",
                "operationId": "getSweep", "parameters": SWEEP_ID,
                "responses": {"200": _resp("the sweep", "Sweep"),
                              "404": _resp("no such sweep", "Error")}}},
            "/api/v1/sweeps/{sweep_id}/cancel": {"post": {
                "summary": "Cancel queued and running trials", "operationId": "cancelSweep",
                "parameters": SWEEP_ID,
                "responses": {"202": _resp("cancel requested", "Sweep"),
                              "404": _resp("no such sweep", "Error"),
                              "409": _resp("the sweep has already ended", "Error")}}},
            "/api/v1/datasets": {
                "post": {"summary": "Upload a CSV (multipart field 'file' or a text/csv body)",
                         "operationId": "uploadDataset",
                         "parameters": [q("name", {"type": "string"})],
                         "requestBody": {"content": {
                             "multipart/form-data": {"schema": {"type": "object", "properties": {
                                 "file": {"type": "string", "format": "binary"},
                                 "name": {"type": "string"}}}},
                             "text/csv": {"schema": {"type": "string"}}}},
                         "responses": {"201": {"description": "the dataset with column profile"},
                                       **ERRORS, "413": _resp("file too large", "Error"),
                                       "422": _resp("not a usable CSV", "Error")}},
                "get": {"summary": "List uploaded datasets", "operationId": "listDatasets",
                        "parameters": [q("limit", {"type": "integer"})],
                        "responses": {"200": {"description": "{datasets: [...]}"}}}},
            "/api/v1/datasets/{dataset_id}": {"get": {
                "summary": "One uploaded dataset", "operationId": "getDataset",
                "parameters": DS_ID, "responses": {"200": {"description": "the dataset"},
                                                   "404": _resp("no such dataset", "Error")}}},
            "/api/v1/health": {"get": {
                "summary": "Database, broker and MLflow reachability", "operationId": "health",
                "security": [{}], "responses": {"200": {"description": "all reachable"},
                                                "503": {"description": "something is down"}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [{}],
                                             "operationId": "openapi",
                                             "responses": {"200": {"description": "OpenAPI"}}}},
            "/api/v1/docs": {"get": {"summary": "Interactive page over this document",
                                     "security": [{}], "operationId": "docs",
                                     "responses": {"200": {"description": "HTML"}}}},
        },
    }
