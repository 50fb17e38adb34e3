"""Run one job end to end: claim it, train it, track it, record the outcome.

Plain functions and one small class; the Celery task only calls :func:`run_job`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
import traceback
from pathlib import Path

from sqlalchemy import delete, insert

from service import spec as S
from service.config import Settings
from service.db import session_scope
from service.jobs import validate
from service.models import TERMINAL, Dataset, Job, JobEpoch, JobStatus, Sweep, as_utc, utcnow

from . import datasets as D
from . import model as M
from . import plots, sweep_trial, tracking

log = logging.getLogger(__name__)


class TrainingFailed(Exception):
    """Training could not go on; the message says why and what to change."""


# --- claiming ----------------------------------------------------------------------------------


def claim(job_id: str, settings: Settings) -> dict | None:
    """Mark the job running and return a snapshot of it, or None when there is nothing to do.

    The row lock serialises two deliveries of the same id; a delivery for a job another live
    worker is training (fresh heartbeat) or that has already ended is dropped.
    """
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            log.warning("job %s not found; dropping the message", job_id)
            return None
        if job.status in {st.value for st in TERMINAL}:
            return None
        now = utcnow()
        if job.status == JobStatus.queued.value and job.cancel_requested:
            job.status, job.finished_at = JobStatus.cancelled.value, now
            return None
        if job.status == JobStatus.running.value:
            if owner_alive(job.worker, job.heartbeat_at or job.started_at, now,
                           settings.stale_heartbeat_s):
                return None  # a duplicate delivery; the live worker owns it
            if job.cancel_requested:  # cancelled while its worker was dead: nothing to resume
                job.status, job.finished_at = JobStatus.cancelled.value, now
                _end_stale_run(settings, job.mlflow_run_id, "KILLED")
                return None
            if job.attempts >= settings.max_attempts:
                job.status, job.finished_at = JobStatus.failed.value, now
                job.error = {"type": "WorkerLost", "message":
                             f"the worker training this job died {job.attempts} times; "
                             "giving up (see the worker logs; memory is the usual cause)"}
                _end_stale_run(settings, job.mlflow_run_id)
                return None
            _end_stale_run(settings, job.mlflow_run_id)
            s.execute(delete(JobEpoch).where(JobEpoch.job_id == job_id))
        job.status = JobStatus.running.value
        job.attempts += 1
        job.started_at = job.heartbeat_at = now
        job.worker = f"{socket.gethostname()}:{os.getpid()}"
        job.error = None
        job.mlflow_run_id = job.mlflow_experiment_id = None
        job.progress = {"epoch": 0, "epochs": job.plan.get("epochs"), "metrics": {}}
        snapshot = {"id": job.id, "name": job.name, "spec": job.spec, "sweep_id": job.sweep_id,
                    "attempts": job.attempts, "trial": None}
        if job.sweep_id:
            snapshot["trial"] = sweep_trial.claim_trial(s, job, s.get(Sweep, job.sweep_id), now)
        return snapshot


def owner_alive(worker: str | None, beat, now, stale_after_s: float) -> bool:
    """Is the process that claimed a running job still at it?

    On this host a dead pid answers at once (a child killed by the OOM killer is re-delivered
    within seconds). A live pid is not enough: after a container restart the hostname is the
    same and the old pid may belong to another process, so the heartbeat must be fresh too.
    For another host only the heartbeat can tell.
    """
    fresh = beat is not None and (now - as_utc(beat)).total_seconds() < stale_after_s
    host, _, pid = (worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return fresh
        return int(pid) != os.getpid() and fresh
    return fresh


def _end_stale_run(settings: Settings, run_id: str | None, status: str = "FAILED") -> None:
    if not run_id or not settings.mlflow_logging:
        return
    try:
        cl = tracking.client(settings.mlflow_tracking_uri)
        cl.set_tag(run_id, "kerasyard.error", "the worker training this run died")
        cl.set_terminated(run_id, status)
    except Exception:  # best effort: the retry goes on regardless
        log.warning("could not mark stale MLflow run %s FAILED", run_id, exc_info=True)


# --- upload access -----------------------------------------------------------------------------


def upload_loader(settings: Settings):
    def load(dataset_id: str):
        with session_scope(settings.database_url) as s:
            row = s.get(Dataset, dataset_id)
            if row is None:
                raise TrainingFailed(f"uploaded dataset {dataset_id!r} no longer exists")
            return row.content, row.columns

    return load


# --- progress reporting ------------------------------------------------------------------------


class Reporter:
    """Hands epochs to MLflow and the database from a background thread.

    fit() only appends to a list. Every ``report_interval_s`` the thread writes the new epochs
    and the progress to the database in one transaction that also reads the cancel flag. MLflow
    gets one log_batch at most every ``mlflow_flush_interval_s``, sized so that its calls fill
    at most ``mlflow_max_duty`` of the wall clock (see _mlflow_share).
    """

    def __init__(self, settings: Settings, job_id: str, epochs: int, cancel: threading.Event):
        self.settings = settings
        self.job_id = job_id
        self.epochs = epochs
        self.cancel = cancel
        self.run_id: str | None = None
        self.mlflow = None
        self._pending_db: list[tuple[int, dict]] = []
        self._pending_mlflow: list[tuple[int, dict]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"reporter-{job_id}", daemon=True)
        self._t0 = time.monotonic()
        self._last_mlflow = time.monotonic()
        # Seconds of MLflow call per metric value, learned from each call (fixed costs included,
        # so small batches overestimate it: the safe side).
        self._cost_per_value = 2e-4
        self.mlflow_errors = 0
        # Called from this thread with each batch of new epochs (a sweep trial's pruning).
        self.on_epochs = None

    def start(self) -> None:
        self._thread.start()

    def fit_started(self) -> None:
        self._t0 = time.monotonic()  # elapsed and ETA count from here

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        with self._lock:
            self._pending_db.append((epoch, metrics))
            self._pending_mlflow.append((epoch, metrics))

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.report_interval_s):
            self.flush()

    def _mlflow_share(self, final: bool) -> list[tuple[int, dict]]:
        """The epochs MLflow gets now (called under the lock).

        MLflow calls may take ``mlflow_max_duty`` of the time since the last one. A server's
        ingest costs about the same per value however they are batched, so when epochs come
        faster than that budget allows, the oldest epochs go now and the rest wait for a later
        call or the final flush after fit. Slow epochs (the usual case) all go every second.
        """
        now = time.monotonic()
        if final:
            batch, self._pending_mlflow = self._pending_mlflow, []
            return batch
        if not self._pending_mlflow or now - self._last_mlflow < \
                self.settings.mlflow_flush_interval_s:
            return []
        budget = self.settings.mlflow_max_duty * (now - self._last_mlflow) / self._cost_per_value
        taken, values = 0, 0
        for _, metrics in self._pending_mlflow:
            values += len(metrics)
            if taken and values > budget:
                break
            taken += 1
        batch, self._pending_mlflow = self._pending_mlflow[:taken], self._pending_mlflow[taken:]
        return batch

    def flush(self, final: bool = False) -> None:
        with self._lock:
            db_batch, self._pending_db = self._pending_db, []
            ml_batch = self._mlflow_share(final) if self.mlflow is not None else []
        if ml_batch and self.run_id:
            started = time.monotonic()
            try:
                tracking.log_epochs(self.mlflow, self.run_id, ml_batch)
                took = time.monotonic() - started
                self._last_mlflow = time.monotonic()
                values = sum(len(m) for _, m in ml_batch)
                self._cost_per_value = 0.5 * self._cost_per_value + 0.5 * took / max(values, 1)
            except Exception:
                self.mlflow_errors += 1
                log.warning("MLflow log_batch failed; will retry", exc_info=True)
                with self._lock:  # keep them for the next flush
                    self._pending_mlflow[:0] = ml_batch
        try:
            self._write_db(db_batch)
        except Exception:
            log.warning("progress write failed; will retry", exc_info=True)
            with self._lock:
                self._pending_db[:0] = db_batch
            return
        if self.on_epochs is not None and db_batch:
            try:
                self.on_epochs(db_batch)
            except Exception:
                log.warning("reporting to the sweep's pruner failed", exc_info=True)

    def _write_db(self, batch: list[tuple[int, dict]]) -> None:
        with session_scope(self.settings.database_url) as s:
            if batch:  # one executemany, not an ORM object per epoch
                s.execute(insert(JobEpoch), [{"job_id": self.job_id, "epoch": e,
                                              "metrics": _clean(m)} for e, m in batch])
            job = s.get(Job, self.job_id)
            if job is None:
                return
            job.heartbeat_at = utcnow()
            if batch:
                epoch, metrics = batch[-1]
                elapsed = time.monotonic() - self._t0
                eta = elapsed / epoch * (self.epochs - epoch) if epoch else None
                job.progress = {"epoch": epoch, "epochs": self.epochs, "metrics": _clean(metrics),
                                "elapsed_s": round(elapsed, 3),
                                "eta_s": None if eta is None else round(eta, 3)}
            if job.cancel_requested:
                self.cancel.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush(final=True)


def _clean(metrics: dict) -> dict:
    """JSON-safe metrics: NaN/inf become None (they are not valid JSON)."""
    return {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None)
            for k, v in metrics.items()}


def epoch_callback(reporter: Reporter, cancel: threading.Event,
                   prune: threading.Event | None = None,
                   checkpoints: dict[int, Path] | None = None):
    """``checkpoints`` maps epoch -> path: the model is saved there at the end of that epoch
    (the shorter-epoch trials recorded from this training)."""
    import keras

    prune = prune or threading.Event()
    checkpoints = checkpoints or {}

    class EpochReporter(keras.callbacks.Callback):
        """Per epoch: metrics + learning rate + epoch time to the reporter; NaN, cancel and a
        sweep's pruner stop training at the epoch boundary."""

        def __init__(self):
            super().__init__()
            self.history: list[dict[str, float]] = []
            self.nan_epoch: int | None = None
            self.cancelled = False
            self.pruned = False
            self.saved: dict[int, Path] = {}
            self._t = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
            metrics["epoch_time_s"] = time.perf_counter() - self._t
            self.history.append(metrics)
            reporter.epoch(epoch + 1, metrics)
            if epoch + 1 in checkpoints:
                self.model.save(checkpoints[epoch + 1])
                self.saved[epoch + 1] = checkpoints[epoch + 1]
            if not math.isfinite(metrics.get("loss", 0.0)):
                self.nan_epoch = epoch + 1
                self.model.stop_training = True
            elif cancel.is_set():
                self.cancelled = True
                self.model.stop_training = True
            elif prune.is_set():
                self.pruned = True
                self.model.stop_training = True

    return EpochReporter()


# --- the run -----------------------------------------------------------------------------------


def run_job(job_id: str, settings: Settings) -> str:
    """Train one job by id; returns its final status ('skipped' when another owns it)."""
    snapshot = claim(job_id, settings)
    if snapshot is None:
        return "skipped"
    return JobRun(settings, snapshot).run()


class JobRun:
    def __init__(self, settings: Settings, snapshot: dict):
        self.settings = settings
        self.job_id = snapshot["id"]
        self.snapshot = snapshot
        self.trial = snapshot.get("trial")
        self.cancel = threading.Event()
        self.prune = threading.Event()
        self.reporter = Reporter(settings, self.job_id, 0, self.cancel)
        self.mlflow = None
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.pruned_at: int | None = None

    def run(self) -> str:
        # The reporter's heartbeat covers the whole run (dataset, compile, artifacts), not only
        # fit: a job whose heartbeat stops is taken for a dead worker's and handed to another.
        self.reporter.start()
        status, summary, error = JobStatus.failed.value, None, None
        try:
            status, summary = self._train()
        except BaseException as exc:  # SoftTimeLimitExceeded derives from Exception too
            error = self._fail(exc)
            if not isinstance(exc, Exception):
                self._settle_trial(status, error)
                raise
        finally:
            self.reporter.close()
        if error is None:
            self._finish(status, summary=summary)
        self._settle_trial(status, error)
        return status

    def _settle_trial(self, status: str, error: dict | None) -> None:
        """A sweep trial: end the trials this training did not reach, then let the sweep's
        scheduler tell Optuna and start the next trial."""
        if not self.trial:
            return
        left = self.trial["derived"]  # settle() skips those already recorded
        if left:
            reason = {"type": "NotReached", "message":
                      f"recorded from the training of job {self.job_id}, which ended "
                      f"{status} before reaching this trial's epochs"
                      + (f": {error['message']}" if error else "")}
            ended = status if status in (JobStatus.cancelled.value, JobStatus.pruned.value) \
                else JobStatus.failed.value
            sweep_trial.settle(self.settings, left, ended, reason)
        try:
            from service.sweeps import advance

            advance(self.settings, self.trial["sweep_id"])
        except Exception:
            log.warning("advancing sweep %s failed; the API's round will", self.trial["sweep_id"],
                        exc_info=True)

    def _train(self) -> tuple[str, dict]:
        st = self.settings
        raw = self.snapshot["spec"]
        spec, plan = validate(st, raw)  # the same checks as at submission, caps included
        import keras

        data = D.build_dataset(spec, plan, upload_loader(st))
        self.reporter.epochs = plan.epochs
        backend = keras.backend.backend()
        spe = M.choose_steps_per_execution(plan.steps_per_epoch, st.max_steps_per_execution,
                                           spec.fit.steps_per_execution)
        if st.mlflow_logging:
            self.mlflow = tracking.client(st.mlflow_tracking_uri)
            exp_id = tracking.experiment_id(self.mlflow, spec.experiment)
            tags = tracking.base_tags(self.job_id, self.snapshot["sweep_id"], data.digest, backend)
            tags.update({f"user.{k}": v for k, v in spec.tags.items()})
            if self.trial:
                self.parent_run_id, _ = sweep_trial.ensure_parent_run(st, self.mlflow,
                                                                      self.trial["sweep_id"])
                tags.update(sweep_trial.child_tags(self.trial, self.parent_run_id))
            params = tracking.run_params(raw, plan, {"steps_per_execution": spe,
                                                     "keras_backend": backend})
            self.run_id = tracking.start_run(self.mlflow, exp_id, spec.name, tags, params)
            self.reporter.mlflow, self.reporter.run_id = self.mlflow, self.run_id
            with session_scope(st.database_url) as s:
                job = s.get(Job, self.job_id)
                job.mlflow_run_id, job.mlflow_experiment_id = self.run_id, exp_id
        pruner = sweep_trial.prune_check(st, self.trial, self.prune)
        self.reporter.on_epochs = pruner

        keras.utils.set_random_seed(spec.fit.seed)
        model = M.build_model(spec, plan)
        M.compile_model(model, spec, plan, spe)
        y_train = M.prepare_targets(data.y_train, spec, plan)
        y_val = M.prepare_targets(data.y_val, spec, plan)
        derived = (self.trial or {}).get("derived", [])
        ckpt_dir = sweep_trial.checkpoint_dir() if derived else None
        checkpoints = {d["epochs"]: Path(ckpt_dir.name) / f"epoch-{d['epochs']}.keras"
                       for d in derived} if ckpt_dir else {}
        callback = epoch_callback(self.reporter, self.cancel, self.prune, checkpoints)
        callbacks = [callback]
        if spec.fit.early_stopping is not None:
            es = spec.fit.early_stopping
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights))
        validation = None
        if data.x_val is not None:
            validation = D.epoch_batches(data.x_val, y_val, len(data.x_val), 0, shuffle=False)

        self.reporter.fit_started()
        t0 = time.perf_counter()
        try:
            model.fit(
                D.epoch_batches(data.x_train, y_train, plan.batch_size, spec.fit.seed,
                                spec.fit.shuffle),
                steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs,
                validation_data=validation, validation_steps=1 if validation else None,
                callbacks=callbacks, verbose=0, shuffle=False,  # the generator shuffles
            )
            fit_time = time.perf_counter() - t0
            self.reporter.flush(final=True)  # every epoch is in MLflow before the artifacts
            history = callback.history
            if derived:
                sweep_trial.record_derived(self, data, history, callback.saved)
        finally:
            if ckpt_dir is not None:
                ckpt_dir.cleanup()

        if callback.nan_epoch is not None:
            raise TrainingFailed(
                f"loss became {history[-1].get('loss')} at epoch {callback.nan_epoch}: training "
                f"diverged. The learning rate {spec.compile.optimizer.learning_rate:g} is "
                "probably too high; lower compile.optimizer.learning_rate")
        status = (JobStatus.cancelled.value if callback.cancelled else
                  JobStatus.pruned.value if callback.pruned else JobStatus.succeeded.value)
        summary = {
            "epochs_completed": len(history),
            "stopped_early": not callback.cancelled and len(history) < plan.epochs,
            "final_metrics": _clean(history[-1]) if history else {},
            "best_loss": min((h["loss"] for h in history), default=None),
            "fit_time_s": round(fit_time, 3),
            "steps_per_execution": spe,
            "keras_backend": backend,
        }
        if callback.pruned:
            self.pruned_at = len(history)
            summary["pruned_at_epoch"] = len(history)
        if self.mlflow is not None:
            write_artifacts(self.mlflow, self.run_id, raw, spec, plan, model, data, history)
            if status == JobStatus.succeeded.value and st.log_model:
                self.log_model(model, data, self.run_id)
        summary["mlflow_errors"] = self.reporter.mlflow_errors
        return status, summary

    def log_model(self, model, data, run_id: str) -> None:
        import keras
        import mlflow
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        sample = data.x_train[:5]
        signature = infer_signature(sample, keras.ops.convert_to_numpy(model(sample)))
        # Explicit requirements skip MLflow's import-capturing subprocess (seconds per run).
        reqs = [f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
        with mlflow.start_run(run_id=run_id):
            mlflow.keras.log_model(model, name="model", signature=signature,
                                   pip_requirements=reqs)

    def _fail(self, exc: BaseException) -> dict:
        try:
            self.reporter.flush(final=True)
        except Exception:
            log.warning("final progress flush failed", exc_info=True)
        if isinstance(exc, S.SpecError):
            error = {"type": "InvalidSpec", "message": str(exc),
                     "details": [d.as_dict() for d in exc.details]}
        elif type(exc).__name__ == "SoftTimeLimitExceeded":
            error = {"type": "TimeLimitExceeded", "message": "the job ran past the worker's soft "
                     f"time limit of {self.settings.task_soft_time_limit_s} s"}
        else:
            error = {"type": type(exc).__name__, "message": str(exc) or repr(exc)}
        log.error("job %s failed: %s", self.job_id, error["message"],
                  exc_info=not isinstance(exc, (TrainingFailed, S.SpecError)))
        if self.mlflow is not None and self.run_id:
            try:
                self.mlflow.set_tag(self.run_id, "kerasyard.error", error["message"][:5000])
                self.mlflow.set_tag(self.run_id, "mlflow.note.content",
                                    f"**Failed**: {error['type']}: {error['message']}")
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "error.txt"
                    path.write_text(f"{error['type']}: {error['message']}\n\n"
                                    + "".join(traceback.format_exception(exc)))
                    self.mlflow.log_artifact(self.run_id, str(path))
            except Exception:
                log.warning("could not record the failure in MLflow", exc_info=True)
        self._finish(JobStatus.failed.value, error=error)
        return error

    def _finish(self, status: str, summary: dict | None = None, error: dict | None = None) -> None:
        if self.mlflow is not None and self.run_id:
            # A pruned trial did what it was asked until its pruner stopped it: FINISHED, and
            # tagged so (MLflow has no PRUNED status).
            mlflow_status = {"succeeded": "FINISHED", "pruned": "FINISHED",
                             "cancelled": "KILLED"}.get(status, "FAILED")
            try:
                if status == JobStatus.pruned.value:
                    self.mlflow.set_tag(self.run_id, "kerasyard.pruned", "true")
                    self.mlflow.set_tag(self.run_id, "kerasyard.pruned_at_epoch",
                                        str(self.pruned_at))
                    self.mlflow.set_tag(self.run_id, "mlflow.note.content",
                                        f"**Pruned** at epoch {self.pruned_at} by the sweep's "
                                        f"{self.trial['sweep_spec']['early_stopping']['type']}"
                                        " pruner: its objective was worse than the other "
                                        "trials' at the same epoch.")
                if self.trial:
                    self.mlflow.set_tag(self.run_id, "kerasyard.trial_state", status)
                self.mlflow.set_terminated(self.run_id, mlflow_status)
            except Exception:
                log.warning("could not end MLflow run %s", self.run_id, exc_info=True)
        with session_scope(self.settings.database_url) as s:
            job = s.get(Job, self.job_id)
            job.status = status
            job.finished_at = utcnow()
            if summary is not None:
                job.summary = summary
            if error is not None:
                job.error = error


def write_artifacts(cl, run_id: str, raw: dict, spec, plan, model, data,
                    history: list[dict]) -> None:
    """spec.json, model_summary.txt, history.csv, learning_curve.png and, for classification,
    confusion_matrix.png, in one log_artifacts call."""
    with tempfile.TemporaryDirectory(prefix="kerasyard-") as tmp:
        out = Path(tmp)
        (out / "spec.json").write_text(json.dumps(raw, indent=2))
        (out / "model_summary.txt").write_text(M.summary_text(model, plan))
        _write_history(history, out / "history.csv")
        if history:
            plots.learning_curve({k: [h.get(k, float("nan")) for h in history]
                                  for k in history[0]}, out / "learning_curve.png",
                                 f"{spec.name}: {plan.gradient_descent} GD, batch "
                                 f"{plan.batch_size}, {len(history)} epochs")
        if plan.task == "classification":
            x, y, which = ((data.x_val, data.y_val, "validation") if data.x_val is not None
                           else (data.x_train, data.y_train, "training"))
            probs = model.predict(x, batch_size=max(256, plan.batch_size), verbose=0)
            pred = ((probs.reshape(-1) > (0.0 if plan.output_activation == "linear" else 0.5))
                    .astype(int) if plan.output_units == 1 else probs.argmax(axis=1))
            counts = plots.confusion_counts(y, pred, plan.n_classes or 2)
            plots.confusion_matrix(counts, data.class_names or [], out / "confusion_matrix.png",
                                   f"confusion matrix ({which} set)")
        cl.log_artifacts(run_id, str(out))


def _write_history(history: list[dict], path: Path) -> None:
    keys = list(history[0]) if history else ["loss"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", *keys])
        for i, row in enumerate(history, start=1):
            writer.writerow([i, *(row.get(k) for k in keys)])

