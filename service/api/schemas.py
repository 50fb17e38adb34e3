"""The OpenAPI document's component schemas: the job and sweep specs generated from their
pydantic models, and the responses' objects written out."""

from __future__ import annotations

from service.api.body import MAX_INT_DIGITS
from service.jobs import STATUSES
from service.jobspec import OPTIMIZERS, JobSpec
from service.jobspec.sweep import SweepSpec
from service.store.paging import CURSOR_PATTERN
from service.sweeps.commands import SWEEP_STATUSES

REF = "#/components/schemas/{model}"


def obj(properties: dict, required: bool | list[str] = True, **extra) -> dict:
    """An object schema; ``required=True`` requires every property (the responses always
    carry all their keys, null when unset)."""
    out = {"type": "object", "properties": properties, **extra}
    if required:
        out["required"] = list(properties) if required is True else required
    return out


NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_OBJ = {"type": ["object", "null"]}
MLFLOW = obj({"run_id": NULLABLE_STR, "experiment_id": NULLABLE_STR, "url": NULLABLE_STR})


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


def schemas() -> dict:
    """Every component schema, by name: the specs' models first, then the responses'."""
    specs = _spec_schemas()
    sweep_spec = specs.pop("SweepSpec")
    return {**specs, **_job_schemas(), "SweepSpec": sweep_spec,
            **_sweep_schemas(), **_dataset_schemas(), **_model_schemas(),
            "Health": _health_schema(), "Error": _error_schema()}


def _spec_schemas() -> dict:
    """The job spec, the sweep spec and the models they are made of, with body.py's limits
    declared (:func:`_storable`); the sweep's base is a job spec."""
    spec_schema, defs = _job_spec_schema()
    sweep_schema = SweepSpec.model_json_schema(ref_template=REF)
    defs.update(sweep_schema.pop("$defs", {}))
    sweep_schema["properties"]["base"] = {"$ref": REF.format(model="JobSpec")}
    _storable(spec_schema)
    _storable(sweep_schema)
    for model_schema in defs.values():
        _storable(model_schema)
    return {**defs, "JobSpec": spec_schema, "SweepSpec": sweep_schema}


def _page(key: str, item: str) -> dict:
    """A page of a listing: its items and the cursor of the next page."""
    return obj({key: {"type": "array", "items": {"$ref": REF.format(model=item)}},
                 "next_cursor": {"type": ["string", "null"], "pattern": CURSOR_PATTERN,
                                 "description": "pass as ?cursor= for the next page"}})


# What the door worked out (service.jobspec.plan.TrainingPlan): the lecture's quantities, each
# layer's output shape and parameters, and the memory estimate.
PLAN = {"type": "object", "description": "input_dim, n_train, n_val, batch_size, "
        "steps_per_epoch, total_updates, total_params, gradient_descent, memory_mb, ...",
        "properties": {
            "input_shape": {"type": "array", "items": {"type": "integer"},
                            "description": "one sample's shape"},
            "total_params": {"type": "integer"},
            "steps_per_epoch": {"type": "integer"}, "total_updates": {"type": "integer"},
            "memory_mb": {"type": "number", "description": "the estimated peak a training "
                          "adds (checked against KERASYARD_MAX_JOB_MEMORY_MB)"},
            "layers": {"type": "array", "description": "each layer, in order", "items": {
                "type": "object", "properties": {
                    "name": {"type": "string"}, "type": {"type": "string"},
                    "output_shape": {"type": "array", "items": {"type": "integer"},
                                     "description": "of one sample"},
                    "params": {"type": "integer"}}}}}}


def _job_schemas() -> dict:
    job = obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "experiment": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES}, "queue": {"type": "string"},
        "spec": {"$ref": REF.format(model="JobSpec"),
                 "description": "the spec as validated: every default filled in"},
        "plan": PLAN,
        "progress": obj({
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
        "resumed_from_epoch": {
            "type": ["integer", "null"],
            "description": "the epoch of the checkpoint the current attempt went on after (its "
            "worker was lost, killed or stopped); null when it started from scratch"},
        "cancel_requested": {"type": "boolean"},
        "pause_requested": {"type": "boolean", "description": "a pause was asked for and the "
                            "job's worker has not stopped yet (it does at the next epoch "
                            "boundary, and the status becomes paused)"},
        "sweep_id": NULLABLE_STR, "trial_number": {"type": ["integer", "null"]},
        "repeat": {"type": ["integer", "null"]}, "trial_params": NULLABLE_OBJ,
        "trained_by": {"type": ["string", "null"],
                       "description": "the job whose training this job was recorded from"},
        "worker": NULLABLE_STR,
        "created_at": {"type": "string"},
        "dispatched_at": {"type": ["string", "null"],
                          "description": "null while the broker was unreachable"},
        "started_at": NULLABLE_STR, "finished_at": NULLABLE_STR})
    history = obj({"job_id": {"type": "string"}, "status": {"type": "string", "enum": STATUSES},
                    "epochs": {"type": "array", "items": obj(
                        {"epoch": {"type": "integer"}},
                        # null: a non-finite value (a diverged loss), which JSON cannot carry
                        additionalProperties={"type": ["number", "null"]})
                    }})
    return {"Job": job, "JobList": _page("jobs", "Job"), "History": history}


def _sweep_schemas() -> dict:
    trial = obj({
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
    runner_up = obj({
        "number": {"type": "integer"}, "name": {"type": "string"}, "params": {"type": "object"},
        "objective": {"type": "number", "description": "mean over seeds"},
        "objective_std": {"type": ["number", "null"]}, "n_seeds": {"type": "integer"}},
        type=["object", "null"], description="the next best trial by its mean; null while only "
        "one trial has an objective")
    best = obj({
        "number": {"type": "integer"}, "name": {"type": "string"}, "params": {"type": "object"},
        "objective": {"type": "number", "description": "mean over seeds"},
        "objective_std": {"type": ["number", "null"],
                          "description": "standard deviation over seeds; null with one seed"},
        "n_seeds": {"type": "integer", "description": "the seeds the mean is over"},
        "job_ids": {"type": "array", "items": {"type": "string"}},
        "runner_up": runner_up,
        "clear": {"type": "boolean", "description": "false when the runner-up is within the "
                  "seeds' noise of the best (Welch's t-test, 5 %, two-sided; always with a "
                  "single seed): add repeats before trusting the ranking"}},
        type=["object", "null"], description="the trial with the best mean objective; null "
        "until one succeeded")
    sweep = obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "experiment": {"type": "string"},
        "status": {"type": "string", "enum": SWEEP_STATUSES},
        "method": {"type": "string"}, "objective": {"type": "object"},
        "max_trials": {"type": ["integer", "null"]}, "max_parallel": {"type": "integer"},
        "repeats": {"type": "integer"}, "early_stopping": NULLABLE_OBJ,
        "share_epochs": obj({"on": {"type": "boolean"}, "why": {"type": "string"}}),
        "pack": obj({"on": {"type": "boolean"}, "why": {"type": "string"},
                      "trainings": {"type": ["integer", "null"]}}),
        "progress": obj({
            "done": {"type": "integer"}, "total": {"type": "integer"},
            "running": {"type": "integer"}, "queued": {"type": "integer"},
            "paused": {"type": "integer"}, "trainings_running": {"type": "integer"}}),
        "best": best,
        "spec": {"type": "object", "description": "the sweep as validated"},
        "trials": {"type": "array", "items": {"$ref": REF.format(model="Trial")},
                   "description": "one sweep only, not in the list"},
        "mlflow": MLFLOW, "report": NULLABLE_OBJ, "error": NULLABLE_OBJ,
        "cancel_requested": {"type": "boolean"},
        "created_at": {"type": "string"}, "started_at": NULLABLE_STR,
        "finished_at": NULLABLE_STR},
        required=["id", "name", "experiment", "status", "method", "objective", "progress",
                  "best", "spec", "mlflow", "error", "created_at", "finished_at"])
    return {"Sweep": sweep, "SweepList": _page("sweeps", "Sweep"), "Trial": trial}


def _dataset_schemas() -> dict:
    column = obj({"name": {"type": "string"}, "numeric": {"type": "boolean"},
                   "integer": {"type": "boolean"}, "n_unique": {"type": ["integer", "null"]}})
    number = {"type": ["number", "null"]}
    arrays = obj({
        "x": obj({"shape": {"type": "array", "items": {"type": "integer"},
                            "description": "(samples, one sample's axes...)"},
                  "dtype": {"type": "string"}, "min": number, "max": number}),
        "y": obj({"dtype": {"type": "string"}, "n_unique": {"type": ["integer", "null"]},
                  "min": number, "max": number,
                  "mapped": {"type": ["boolean", "null"], "description": "integer y whose "
                             "classes are not 0..k-1, trained as 0..k-1 in sorted order"}})},
        type=["object", "null"], description="an .npz's arrays; null for a CSV")
    summary = {
        "id": {"type": "string"}, "name": {"type": "string"}, "filename": NULLABLE_STR,
        "format": {"type": "string", "enum": ["csv", "npz"]},
        "size_bytes": {"type": "integer"}, "sha256": {"type": "string"},
        "n_rows": {"type": "integer", "description": "rows of a CSV, samples of an .npz"},
        "n_columns": {"type": "integer", "description": "0 for an .npz"},
        "arrays": arrays,
        "created_at": NULLABLE_STR,
        "use": {"type": "object", "description": "the spec's dataset object for it"}}
    return {"Dataset": obj({**summary, "columns": {"type": "array", "items": column}}),
            "DatasetSummary": obj(summary,
                                   description="a dataset in a listing: no column profiles"),
            "DatasetList": obj({"datasets": {"type": "array", "items": {
                "$ref": REF.format(model="DatasetSummary")}}})}


def _model_schemas() -> dict:
    summary = {
        "id": {"type": "string"}, "name": {"type": "string"}, "filename": NULLABLE_STR,
        "size_bytes": {"type": "integer"}, "sha256": {"type": "string"},
        "keras_version": NULLABLE_STR,
        "input_shape": {"type": "array", "items": {"type": "integer"},
                        "description": "the shape of one sample the model takes"},
        "input_dtype": {"type": "string", "enum": ["float32", "int32"]},
        "n_params": {"type": ["integer", "null"]},
        "n_layers": {"type": "integer"}, "created_at": NULLABLE_STR,
        "use": {"type": "object", "description": "the spec's model object for it"},
        "weights": {"type": "string", "description": "the uploaded weights are the starting "
                    "weights of every job that trains the model"}}
    layers = {"type": "array", "items": {"type": "object"}, "description": (
        "the model's layers as a spec's model.layers would hold them: the door checks the "
        "jobs that train it against them")}
    return {"Model": obj({**summary, "layers": layers}),
            "ModelSummary": obj(summary, description="a model in a listing: no layers"),
            "ModelList": obj({"models": {"type": "array", "items": {
                "$ref": REF.format(model="ModelSummary")}}})}


def _health_schema() -> dict:
    component = obj({"ok": {"type": "boolean"}, "detail": {"type": "string"}})
    return obj({"status": {"type": "string", "enum": ["ok", "degraded"]},
                 "components": obj({"database": component, "broker": component,
                                     "mlflow": component}),
                 "mlflow_ui": {"type": "string"}})


def _error_schema() -> dict:
    return obj({"error": obj({
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": obj({
            "loc": {"type": "string"}, "msg": {"type": "string"}, "value": {}},
            required=["loc", "msg"])}})})
