"""What a finished run leaves in MLflow besides its metrics: the artifacts of a run, its
model, and the record of a failure."""

from __future__ import annotations

import csv
import json
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service.config import Settings
from worker.training import model as M
from worker.training import plots, svg_plots
from worker.training.chance import chance_levels


def write_artifacts(cl, run_id: str, raw: dict, spec, plan, model, data,
                    history: list[dict], lean: bool = True) -> None:
    """spec.json, model_summary.txt, history.csv, the learning curve and, for classification,
    the confusion matrix, in one log_artifacts call. The plots are ``.svg`` written as text
    when ``lean`` (settings.lean_recording), else ``.png`` drawn by matplotlib."""
    fig, ext = (svg_plots, "svg") if lean else (plots, "png")
    with tempfile.TemporaryDirectory(prefix="kerasyard-") as tmp:
        out = Path(tmp)
        (out / "spec.json").write_text(json.dumps(raw, indent=2))
        (out / "model_summary.txt").write_text(M.summary_text(model, plan))
        write_history(history, out / "history.csv")
        if history:
            chance = chance_levels(plan.n_classes or 2, data.y_val if data.x_val is not None
                                   else data.y_train) if plan.task == "classification" else None
            fig.learning_curve({k: [h.get(k, float("nan")) for h in history]
                                for k in history[0]}, out / f"learning_curve.{ext}",
                               f"{spec.name}: {plan.gradient_descent} GD, batch "
                               f"{plan.batch_size}, {len(history)} epochs"
                               + ("" if plan.n_val else
                                  "\n(no validation data: these are training-set metrics)"),
                               chance)
        if plan.task == "classification":
            x, y, which = ((data.x_val, data.y_val, "validation") if data.x_val is not None
                           else (data.x_train, data.y_train, "training"))
            probs = predict(model, x, max(256, plan.batch_size))
            pred = ((probs.reshape(-1) > (0.0 if plan.output_activation == "linear" else 0.5))
                    .astype(int) if plan.output_units == 1 else probs.argmax(axis=1))
            counts = plots.confusion_counts(y, pred, plan.n_classes or 2)
            fig.confusion_matrix(counts, data.class_names or [], out / f"confusion_matrix.{ext}",
                                 f"confusion matrix ({which} set)")
        if lean:
            upload(cl, out, run_id=run_id)
        else:
            cl.log_artifacts(run_id, str(out))


def upload(cl, folder: Path, *, run_id: str | None = None, model_id: str | None = None) -> None:
    """Every file under ``folder`` to the run's (or the logged model's) artifacts, the
    files side by side: one request each either way, but on the project's 2-core machine six
    small files took 0.02-0.03 s at once against 0.06-0.18 s one after another. A client
    without MLflow's artifact-repository lookup uploads them one after another."""
    resource, rid = ("run", run_id) if run_id else ("logged_model", model_id)
    try:
        repo = cl._tracking_client._get_artifact_repo(rid, resource=resource)
    except AttributeError:  # another client (or a future MLflow): its own sequential upload
        if run_id:
            cl.log_artifacts(run_id, str(folder))
        else:
            cl.log_model_artifacts(model_id, str(folder))
        return
    files = [p for p in sorted(Path(folder).rglob("*")) if p.is_file()]

    def put(path: Path) -> None:
        rel = path.parent.relative_to(folder).as_posix()
        repo.log_artifact(str(path), None if rel == "." else rel)

    if files:
        with ThreadPoolExecutor(min(8, len(files))) as pool:
            list(pool.map(put, files))  # the first failure is raised here


def predict(model, x, batch_size: int):
    """``model.predict`` without it: called eagerly in batches, no predict function traced
    and compiled for a model used once (a recorded trial's; 0.25-0.5 s each on 2 cores)."""
    import keras
    import numpy as np

    return np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + batch_size],
                                                            training=False))
                           for i in range(0, len(x), batch_size)])


def write_history(history: list[dict], path: Path) -> None:
    keys = list(history[0]) if history else ["loss"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", *keys])
        for i, row in enumerate(history, start=1):
            writer.writerow([i, *(row.get(k) for k in keys)])


def log_model(settings: Settings, model, data, run_id: str, *,
              experiment_id: str | None = None, params: dict | None = None) -> None:
    """The model as an MLflow 3 logged model of the run (``runs:/<run_id>/model`` loads it),
    logged without making the run the active fluent run: leaving ``with mlflow.start_run()``
    would end it FINISHED, and the run's end status is set only after the job's final write went
    through (run.py; a final write that fails must not leave a FINISHED run behind).

    ``experiment_id`` and ``params`` (the run's, as logged): what the caller knows already;
    without them the run is read. With ``settings.lean_recording`` the model is logged by
    :func:`_log_model_lean`, else by MLflow's ``Model.log``."""
    import keras
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)  # finalize_logged_model reads it
    client = mlflow.tracking.MlflowClient(settings.mlflow_tracking_uri)
    if experiment_id is None or params is None:
        run = client.get_run(run_id)
        experiment_id, params = run.info.experiment_id, run.data.params
    sample = signature_sample(model, data.x_train)
    signature = infer_signature(sample, keras.ops.convert_to_numpy(model(sample)))
    # What the fluent call would create: the model in the run's experiment, its source the
    # run, the run's params on it.
    logged = client.create_logged_model(
        experiment_id=experiment_id, name="model", source_run_id=run_id,
        params={k: str(v) for k, v in params.items()})
    # Explicit requirements skip MLflow's import-capturing subprocess (seconds per run).
    reqs = [f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
    if settings.lean_recording:
        _log_model_lean(client, model, run_id, logged, signature, reqs)
        return
    from mlflow.models import Model

    # Model.log links it to the run (log_outputs), uploads it and marks it READY (FAILED on
    # an error).
    Model.log(artifact_path=None, name="model", flavor=mlflow.keras, model=model, run_id=run_id,
              model_id=logged.model_id, signature=signature, pip_requirements=reqs)


def _log_model_lean(client, model, run_id: str, logged, signature, reqs: list[str]) -> None:
    """What ``Model.log`` does for a Keras model, less what a kerasyard run does not need:
    the same files (``mlflow.keras.save_model``: MLmodel, the .keras file, requirements and
    environments), uploaded to the logged model, linked to the run, marked READY (FAILED on
    an error). Left out: MLflow's linking of the run's step-0 metrics to the model (it reads
    every metric's whole history: 0.16 s a job; kerasyard's epochs are steps 1..n and its
    step-0 values are the run's summary, on the run) and the serving-input validation (no
    input example is logged)."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    model_id = logged.model_id
    try:
        with tempfile.TemporaryDirectory(prefix="kerasyard-model-") as tmp:
            path = Path(tmp) / "model"
            meta = Model(artifact_path=logged.artifact_location, model_uuid=model_id,
                         run_id=run_id, model_id=model_id)
            mlflow.keras.save_model(model, str(path), mlflow_model=meta, signature=signature,
                                    pip_requirements=reqs)
            upload(client, path, model_id=model_id)
        client.log_outputs(run_id, models=[LoggedModelOutput(model_id, step=0)])
        client.finalize_logged_model(model_id, LoggedModelStatus.READY)
    except BaseException:
        try:  # as Model.log leaves one that failed: FAILED, not PENDING for ever
            client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        except Exception:
            pass
        raise


def signature_sample(model, x):
    """The rows the logged model's signature is inferred from: a few of the real input, in
    the dtype the model's input takes (int32 token ids for an embedding, else float32), so
    the signature says what ``predict`` accepts (shape with -1 for the batch)."""
    inputs = getattr(model, "inputs", None) or []
    dtype = getattr(inputs[0], "dtype", None) if len(inputs) == 1 else None
    sample = x[:5]
    return sample.astype(str(dtype)) if dtype and str(dtype) != str(sample.dtype) else sample


def record_failure(cl, run_id: str, error: dict, exc: BaseException) -> None:
    """The error as tags, a note and error.txt (with the traceback) on the run."""
    cl.set_tag(run_id, "kerasyard.error", error["message"][:5000])
    cl.set_tag(run_id, "mlflow.note.content", f"**Failed**: {error['type']}: {error['message']}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "error.txt"
        path.write_text(f"{error['type']}: {error['message']}\n\n"
                        + "".join(traceback.format_exception(exc)))
        cl.log_artifact(run_id, str(path))
