"""One job's run, top to bottom: claim -> trial context -> dataset and model -> MLflow run
-> fit -> artifacts -> finish.

Every write to the job's row goes through a fenced function of :mod:`service.lifecycle`.
When one of them (or the heartbeat) answers SUPERSEDED, another attempt owns the job: this
run stops at the next epoch boundary, writes nothing more to the database, logs no artifacts
or model, and leaves its MLflow run's status to the new owner (who ends it as a stale run).
The MLflow run gets its final status only after :func:`service.lifecycle.finish` went
through, so a failed last write never relabels it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from service import jobspec as S
from service import lifecycle
from service.config import Settings
from service.lifecycle import MLFLOW_RUN_STATUS, Claim, Ownership
from service.store.db import session_scope
from service.store.models import Dataset, JobStatus
from service.sweeps import for_worker
from service.validation import validate
from worker import gpu
from worker.jobs.claim import claim
from worker.recording import artifacts, tracking
from worker.recording.dbretry import retry_db
from worker.recording.mlflow_retry import Deadline, MlflowUnavailable, retry
from worker.recording.reporter import Heartbeat, Reporter, Signals, clean, epoch_callback
from worker.recording.sender import WorkerSender
from worker.sweeps import pack as P
from worker.sweeps import shared_trials
from worker.training import datasets as D
from worker.training import model as M
from worker.training import trainer as F
from worker.training.chance import TRAINING_DATA_NOTE, chance_levels

log = logging.getLogger(__name__)

SUPERSEDED = "superseded"


class TrainingFailed(Exception):
    """Training could not go on; the message says why and what to change."""


@dataclasses.dataclass
class Outcome:
    status: JobStatus
    summary: dict | None = None
    error: dict | None = None


def run_job(job_id: str, settings: Settings) -> str:
    """Train one job by id; returns its final status, 'skipped' when there was nothing to do
    or 'superseded' when another attempt took the job over."""
    got = claim(job_id, settings)
    if got is None:
        return "skipped"
    return JobRun(settings, got).run()


def upload_loader(settings: Settings):
    def load(dataset_id: str):
        with session_scope(settings.database_url) as s:
            row = s.get(Dataset, dataset_id)
            if row is None:
                raise TrainingFailed(f"uploaded dataset {dataset_id!r} no longer exists")
            return row.content, row.columns

    return load


class JobRun:
    def __init__(self, settings: Settings, claimed: Claim):
        self.settings = settings
        self.claim = claimed
        self.fence = claimed.fence
        self.job_id = claimed.fence.job_id
        self.signals = Signals()
        self.heartbeat = Heartbeat(settings, self.fence, self.signals)
        self.reporter = Reporter(settings, self.fence, 0, self.signals)
        self.ctx: for_worker.TrialContext | None = None
        self.mlflow = None
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.pruned_at: int | None = None
        self.chance: dict[str, float] | None = None

    @property
    def superseded(self) -> bool:
        return self.signals.superseded.is_set()

    def run(self) -> str:
        # The heartbeat covers the whole run (dataset, compile, artifacts), not only fit: a job
        # whose heartbeat stops is taken for a dead worker's and handed to another.
        self.heartbeat.start()
        self.reporter.start()
        outcome = Outcome(JobStatus.failed)
        try:
            try:
                self.ctx = for_worker.trial_context(self.settings, self.claim)
                outcome = self._train()
            except BaseException as exc:  # SoftTimeLimitExceeded derives from Exception too
                outcome = self._failed(exc)
                if not isinstance(exc, Exception):
                    raise
        finally:
            self.reporter.close()
            self.heartbeat.stop()  # the last writes are a few quick transactions
            result = self._end(outcome)
            if result != SUPERSEDED and self.ctx is not None:
                # Tell Optuna, start the next trials (the superseded leave it to the owner).
                for_worker.trial_ended(self.settings, self.ctx.sweep_id,
                                       WorkerSender(self.settings))
        return result

    # --- training --------------------------------------------------------------------------

    def _train(self) -> Outcome:
        st = self.settings
        raw = self.claim.spec
        spec, plan = validate(st, raw)  # the same checks as at submission, caps included
        import keras

        data = D.build_dataset(spec, plan, upload_loader(st))
        self.reporter.epochs = plan.epochs
        # What guessing scores, on the data the metrics describe.
        self.chance = chance_levels(plan.n_classes or 2, data.y_val if data.x_val is not None
                                    else data.y_train) if plan.task == "classification" else None
        backend = keras.backend.backend()
        spe = M.choose_steps_per_execution(plan.steps_per_epoch, st.max_steps_per_execution,
                                           spec.fit.steps_per_execution)
        if st.mlflow_logging and not self.superseded:
            self._start_mlflow_run(raw, spec, plan, data, {"steps_per_execution": spe,
                                                           "keras_backend": backend})
        self.reporter.on_epochs = for_worker.pruner(st, self.ctx)

        keras.utils.set_random_seed(spec.fit.seed)
        model = M.build_model(spec, plan)
        M.compile_model(model, spec, plan, spe)
        y_train = M.prepare_targets(data.y_train, spec, plan)
        y_val = M.prepare_targets(data.y_val, spec, plan)
        ckpt_dir = shared_trials.checkpoint_dir() if self.ctx and self.ctx.shared else None
        towers = None
        timings: dict = {}
        if self.ctx and P.is_pack(raw, self.ctx.shared):
            towers = self._pack_towers(raw, plan, model, spe, Path(ckpt_dir.name))
            # Every tower reports to its pruner at the epoch's end, in tower order (the
            # reporter's thread would report this job's own tower late and out of turn).
            towers[0].pruner, self.reporter.on_epochs = self.reporter.on_epochs, None
            callback = P.pack_callback(towers, self.reporter, self.signals,
                                       prefixed=P.backend_packs(),
                                       on_progress=lambda: self._tower_progress(towers),
                                       progress_interval_s=max(st.report_interval_s, 1.0))
        else:
            callback = epoch_callback(self.reporter, self.signals, shared_trials.checkpoints(
                self.ctx, Path(ckpt_dir.name)) if ckpt_dir else None)
        callbacks = [callback]
        if spec.fit.early_stopping is not None:
            es = spec.fit.early_stopping
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights))

        fit_kw = dict(batch_size=plan.batch_size, steps_per_execution=spe, seed=spec.fit.seed,
                      shuffle=spec.fit.shuffle, validation=None if data.x_val is None else
                      (data.x_val, y_val))
        self.reporter.fit_started()
        t0 = time.perf_counter()
        try:
            if towers is not None:
                callback = self._fit_pack(towers, callback, data.x_train, y_train, plan.epochs,
                                          fit_kw)
            else:
                F.fit(model, data.x_train, y_train, epochs=plan.epochs, callbacks=callbacks,
                      **fit_kw)
            fit_time = time.perf_counter() - t0
            # Every epoch is in MLflow before the artifacts; an MLflow that does not answer
            # now delays the job (bounded), it does not lose the epochs.
            end_deadline = Deadline(st.mlflow_retry_s)
            self.reporter.flush(final=True)
            if self.reporter.mlflow_pending() and not self.superseded:
                self._mlflow_step(self._flush_metrics, "logging the last epochs' metrics",
                                  end_deadline)
            history = callback.history
            if self.ctx and self.ctx.shared and not self.superseded:
                shared_trials.record(
                    st, self.fence, self.signals, self.mlflow, ctx=self.ctx,
                    parent_run_id=self.parent_run_id, trainer_run_id=self.run_id, data=data,
                    history=history, saved=callback.saved,
                    trials=[tr for tr in towers[0].trials if tr.id not in towers[0].cancelled]
                    if towers else None, timings=timings)
            if towers is not None and not self.superseded:
                self._record_towers(towers, data, timings)
        finally:
            if ckpt_dir is not None:
                ckpt_dir.cleanup()
        if self.superseded:
            return Outcome(JobStatus.failed)  # never written: _end sees the signal

        if callback.nan_epoch is not None:
            raise TrainingFailed(
                f"loss became {history[-1].get('loss')} at epoch {callback.nan_epoch}: training "
                f"diverged. The learning rate {spec.compile.optimizer.learning_rate:g} is "
                "probably too high; lower compile.optimizer.learning_rate")
        status = (JobStatus.cancelled if callback.cancelled else
                  JobStatus.pruned if callback.pruned else JobStatus.succeeded)
        summary = {
            "epochs_completed": len(history),
            "stopped_early": not callback.cancelled and len(history) < plan.epochs,
            "final_metrics": clean(history[-1]) if history else {},
            "best_loss": min((h["loss"] for h in history), default=None),
            "fit_time_s": round(fit_time, 3),
            "steps_per_execution": spe,
            "keras_backend": backend,
            "device": gpu.device_summary(),  # what it trained on: a GPU job never runs on a CPU
        }
        if self.chance is not None:
            summary["chance"] = {k: round(v, 6) for k, v in self.chance.items()}
        if callback.pruned:
            self.pruned_at = len(history)
            summary["pruned_at_epoch"] = len(history)
        if towers is not None:
            summary["pack"] = {"towers": len(towers), "trials": 1 + len(self.ctx.shared),
                               "packed": P.backend_packs(),
                               **{k: round(v, 3) for k, v in timings.items()}}
        if self.mlflow is not None and not self.superseded:
            self._mlflow_step(lambda: artifacts.write_artifacts(
                self.mlflow, self.run_id, raw, spec, plan, model, data, history),
                "logging the run's artifacts", end_deadline)
            if status == JobStatus.succeeded and st.log_model and not self.superseded:
                self._mlflow_step(lambda: artifacts.log_model(st, model, data, self.run_id),
                                  "logging the model", end_deadline)
        summary["mlflow_errors"] = self.reporter.mlflow_errors
        return Outcome(status, summary)

    # --- packs: other trials trained as towers of this training ------------------------------

    def _pack_towers(self, raw: dict, plan, model, spe: int, folder: Path) -> list[P.Tower]:
        """Tower 0 is this job's model; each other configuration the pack carries is built
        and compiled exactly as its own training would build it (same seed, same weights)."""
        import keras

        towers = P.towers_of(raw, plan.epochs, self.ctx.shared)
        for t in towers:
            t.checkpoints = {tr.epochs: folder / f"t{t.index}-epoch-{tr.epochs}.keras"
                             for tr in t.trials}
            if t.index == 0:
                t.model = model
                continue
            t.spec, t.plan = validate(self.settings, t.raw)
            keras.utils.set_random_seed(t.spec.fit.seed)
            t.model = M.build_model(t.spec, t.plan)
            M.compile_model(t.model, t.spec, t.plan, spe)
            lead = max(t.trials, key=lambda tr: tr.epochs)
            t.pruner = for_worker.pruner(self.settings, self.ctx, lead)
        log.info("job %s trains a pack of %d towers (%d trials)", self.job_id, len(towers),
                 1 + len(self.ctx.shared))
        return towers

    def _fit_pack(self, towers: list[P.Tower], callback, x, y, epochs: int, fit_kw: dict):
        """One fit of the pack (TensorFlow), or each tower's own fit in turn (the backends
        that do not pack); returns the callback that holds this job's own outcome."""
        if P.backend_packs():
            bs = fit_kw["batch_size"]
            pk = P.make_pack([t.model for t in towers], fit_kw["steps_per_execution"],
                             (x[:bs], y[:bs]))
            F.fit(pk, x, y, epochs=epochs, callbacks=[callback], **fit_kw)
            return callback
        return P.fit_in_turn(towers, callback, self.reporter, self.signals,
                             lambda t, cb: F.fit(t.model, x, y, epochs=t.epochs,
                                                 callbacks=[cb], **fit_kw))

    def _tower_progress(self, towers: list[P.Tower]) -> None:
        """Live progress of the trials the pack carries; reads which were asked to cancel."""
        progress = {}
        for t in towers:
            for tr in t.trials:
                e = min(len(t.history), tr.epochs)
                if e:
                    progress[tr.id] = {"epoch": e, "epochs": tr.epochs,
                                       "metrics": clean(t.history[e - 1])}
        try:
            cancelled = lifecycle.recorded_progress(self.settings, self.fence, progress)
        except Exception:
            log.warning("progress write of job %s's pack failed", self.job_id, exc_info=True)
            return
        for t in towers:
            t.cancelled = {tr.id for tr in t.trials if tr.id in (cancelled or ())}

    def _record_towers(self, towers: list[P.Tower], data, timings: dict) -> None:
        """Each other tower's trials are recorded like shared trials; a tower that diverged
        fails the trials it did not reach with the reason, a pruned one ends pruned; trials
        asked to cancel end cancelled."""
        st = self.settings
        for t in towers:
            if self.superseded:
                return
            if t.cancelled:
                lifecycle.end_unrecorded(st, sorted(t.cancelled), JobStatus.cancelled,
                                         {"type": "Cancelled", "message": "cancelled while "
                                          f"its tower trained in job {self.job_id}'s pack"},
                                         fence=self.fence)
            if t.index == 0:
                continue  # recorded with this job's own trial
            keep = [tr for tr in t.trials if tr.id not in t.cancelled]
            done = set(shared_trials.record(
                st, self.fence, self.signals, self.mlflow, ctx=self.ctx,
                parent_run_id=self.parent_run_id, trainer_run_id=self.run_id, data=data,
                history=t.history, saved=t.saved, trials=keep,
                pruned_model=t.model if t.ended == "pruned" else None, timings=timings))
            left = [tr.id for tr in keep if tr.id not in done]
            if not left:
                continue
            if t.ended == "diverged":
                h = t.history[-1] if t.history else {}
                error = {"type": "TrainingFailed", "message": (
                    f"loss became {h.get('loss')} at epoch {t.ended_at}: training diverged. "
                    f"The learning rate {t.spec.compile.optimizer.learning_rate:g} is probably "
                    "too high; lower compile.optimizer.learning_rate (this trial trained as a "
                    f"tower of job {self.job_id}'s pack; the other towers trained on)")}
                status = JobStatus.failed
            elif t.ended == "pruned":
                error = {"type": "Pruned", "message": f"its tower was pruned at epoch "
                         f"{t.ended_at}, before this trial's epochs"}
                status = JobStatus.pruned
            else:
                continue  # the training's own end says why (end_unreached)
            lifecycle.end_unrecorded(st, left, status, error, fence=self.fence)

    def _mlflow_step(self, fn, what: str, deadline: Deadline):
        """``fn()`` retried while MLflow does not answer, within ``deadline``
        (:mod:`.mlflow_retry`); MlflowUnavailable after it."""
        return retry(fn, what, self.settings.mlflow_tracking_uri, deadline,
                     stop=lambda: self.superseded)

    def _flush_metrics(self) -> None:
        self.reporter.flush_mlflow()
        if self.reporter.mlflow_pending():
            raise ConnectionError(f"log_batch of {self.reporter.mlflow_pending()} epochs failed "
                                  f"({self.reporter.mlflow_last_error})")

    def _start_mlflow_run(self, raw: dict, spec, plan, data, extra: dict) -> None:
        st = self.settings
        self.mlflow = cl = tracking.client(st.mlflow_tracking_uri)
        deadline = Deadline(st.mlflow_retry_s)  # one budget for the whole start
        exp_id = self._mlflow_step(lambda: tracking.experiment_id(cl, spec.experiment),
                                   f"looking up experiment {spec.experiment!r}", deadline)
        tags = tracking.base_tags(self.job_id, self.claim.sweep_id, data.digest,
                                  extra["keras_backend"])
        # With the job id, what finds this attempt's run again when a retry follows a lost
        # answer (tracking.start_job_run), and what the reconciler reads.
        tags["kerasyard.attempt"] = str(self.fence.attempt)
        tags.update({f"user.{k}": v for k, v in spec.tags.items()})
        tags.update(gpu.device_tags())
        if self.ctx is not None:
            self.parent_run_id, _ = self._mlflow_step(
                lambda: tracking.sweep_parent_run(st, cl, self.ctx.sweep_id),
                "creating the sweep's parent run", deadline)
            tags.update(for_worker.child_tags(self.ctx, self.parent_run_id))
        params = tracking.run_params(raw, plan, extra)
        self.run_id = self._mlflow_step(
            lambda: tracking.start_job_run(cl, exp_id, spec.name, tags, params),
            "creating the job's run and logging its params", deadline)
        answer = lifecycle.set_run(st, self.fence, self.run_id, exp_id)
        if answer is Ownership.SUPERSEDED:
            # The job row never held this run, so no new owner will end it: end it here.
            self._end_unrecorded_run("this attempt was superseded before its run was recorded")
            self.signals.answer(answer, self.job_id)
            self.mlflow = self.run_id = None
            return
        self.reporter.mlflow, self.reporter.run_id = cl, self.run_id
        self._mlflow_step(lambda: self._log_reading_aids(plan), "logging the chance levels",
                          deadline)

    def _log_reading_aids(self, plan) -> None:
        """The chance-level loss and accuracy beside the run's metrics and, without held-out
        data, a description saying its metrics are on the training data."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(f"chance_{k}", v, now, 0) for k, v in (self.chance or {}).items()]
        tags = [] if plan.n_val else [RunTag("mlflow.note.content", TRAINING_DATA_NOTE),
                                      RunTag("kerasyard.metrics_on", "training")]
        if metrics or tags:
            self.mlflow.log_batch(self.run_id, metrics=metrics, tags=tags)

    def _end_unrecorded_run(self, reason: str) -> None:
        try:
            self.mlflow.set_tag(self.run_id, "kerasyard.error", reason)
            self.mlflow.set_terminated(self.run_id, "KILLED")
        except Exception:
            log.warning("could not end MLflow run %s", self.run_id, exc_info=True)

    # --- the end ---------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> Outcome:
        if isinstance(exc, S.SpecError):
            error = {"type": "InvalidSpec", "message": str(exc),
                     "details": [d.as_dict() for d in exc.details]}
        elif isinstance(exc, MlflowUnavailable):
            error = {"type": "MlflowUnavailable", "message": str(exc)}
        elif type(exc).__name__ == "SoftTimeLimitExceeded":
            error = {"type": "TimeLimitExceeded", "message": "the job ran past the worker's soft "
                     f"time limit of {self.settings.task_soft_time_limit_s} s"}
        else:
            error = {"type": type(exc).__name__, "message": str(exc) or repr(exc)}
        log.error("job %s failed: %s", self.job_id, error["message"],
                  exc_info=not isinstance(exc, (TrainingFailed, S.SpecError)))
        if self.mlflow is not None and self.run_id and not self.superseded and \
                not isinstance(exc, MlflowUnavailable):  # the reconciler records that one later
            try:
                artifacts.record_failure(self.mlflow, self.run_id, error, exc)
            except Exception:
                log.warning("could not record the failure in MLflow", exc_info=True)
        return Outcome(JobStatus.failed, error=error)

    def _end(self, outcome: Outcome) -> str:
        """The last writes: shared trials not reached, the job row, then the MLflow run."""
        if not self.superseded:
            try:
                shared_trials.end_unreached(self.settings, self.fence, self.ctx,
                                            outcome.status, outcome.error)
            except Exception:
                log.warning("ending the unreached shared trials of job %s failed", self.job_id,
                            exc_info=True)
        answer = Ownership.SUPERSEDED if self.superseded else self._finish(outcome)
        if answer is Ownership.SUPERSEDED:
            self.signals.answer(answer, self.job_id)
            log.warning("job %s: stopped as superseded (attempt %d) after %d epochs; its new "
                        "owner ends MLflow run %s", self.job_id, self.fence.attempt,
                        self.reporter.last_epoch, self.run_id)
            return SUPERSEDED
        self._end_mlflow_run(outcome)
        return outcome.status.value

    def _finish(self, outcome: Outcome) -> Ownership:
        """The epochs still waiting for the database, then the job's final status, each retried
        while the database does not answer (``db_retry_s``): a training that finished is not
        thrown away for a write that failed during a database outage."""
        st = self.settings
        retry_db(st, f"final epochs of job {self.job_id}",
                 lambda: self.reporter.flush(final=True, raise_db_errors=True))
        if self.superseded:
            return Ownership.SUPERSEDED
        failed = []

        def write() -> Ownership:
            try:
                return lifecycle.finish(st, self.fence, outcome.status,
                                        summary=outcome.summary, error=outcome.error)
            except Exception:
                failed.append(True)
                raise

        try:
            answer = retry_db(st, f"final write of job {self.job_id}", write)
        except Exception:
            # The row stays running; its heartbeat has stopped, the API's background round
            # hands the job to another worker, which ends this MLflow run.
            log.error("job %s: the final write failed; leaving MLflow run %s as it is",
                      self.job_id, self.run_id)
            raise
        if answer is Ownership.SUPERSEDED and failed and retry_db(
                st, f"final write of job {self.job_id} (did a failed try land?)",
                lambda: lifecycle.finished_by(st, self.fence, outcome.status)):
            # An earlier try committed but its answer was lost with the connection.
            return Ownership.OWNED
        return answer

    def _end_mlflow_run(self, outcome: Outcome) -> None:
        if self.mlflow is None or not self.run_id:
            return
        gave_up = (outcome.error or {}).get("type") == "MlflowUnavailable"
        # The job row has its end already; MLflow gets it within the bound (one try when the
        # bound was spent already), or from the reconciler (worker.reconcile_runs) once it
        # answers again.
        deadline = Deadline(0 if gave_up else self.settings.mlflow_retry_s)
        try:
            self._mlflow_step(lambda: self._end_tags_and_status(outcome.status),
                              "ending the run", deadline)
        except Exception:
            log.warning("could not end MLflow run %s; the reconciler will", self.run_id,
                        exc_info=True)

    def _end_tags_and_status(self, status: JobStatus) -> None:
        cl, run_id = self.mlflow, self.run_id
        if status == JobStatus.pruned:
            cl.set_tag(run_id, "kerasyard.pruned", "true")
            cl.set_tag(run_id, "kerasyard.pruned_at_epoch", str(self.pruned_at))
            cl.set_tag(run_id, "mlflow.note.content",
                       f"**Pruned** at epoch {self.pruned_at} by the sweep's "
                       f"{self.ctx.early_stopping if self.ctx else ''} pruner: its "
                       "objective was worse than the other trials' at the same epoch.")
        if self.ctx is not None:
            cl.set_tag(run_id, "kerasyard.trial_state", status.value)
        cl.set_terminated(run_id, MLFLOW_RUN_STATUS[status])
