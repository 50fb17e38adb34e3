"""One job's run, top to bottom: claim -> trial context -> dataset -> a trainer (one model, or
a pack of towers) -> MLflow run -> the models -> fit -> shared trials -> artifacts -> finish.

Every write to the job's row goes through a fenced function of :mod:`service.worker_api`.
When one of them (or the heartbeat) answers SUPERSEDED, another attempt owns the job: this
run stops at the next epoch boundary, writes nothing more to the database, logs no artifacts
or model, and leaves its MLflow run's status to the new owner (who ends it as a stale run).
The MLflow run gets its final status only after :func:`service.worker_api.finish` went
through, so a failed last write never relabels it.

:class:`JobRun` orchestrates; it picks the trainer once (:mod:`.single`: one model;
:mod:`.packed`: a pack of towers, both behind :class:`~.trainers.JobTrainer`), and hands the
MLflow run to :mod:`.mlflow_run` and the last database writes to :mod:`.finish`.
"""

from __future__ import annotations

import logging
import time

from service import jobspec as S
from service import worker_api as api
from service.config import Settings
from service.worker_api import Claim, JobStatus, Ownership
from worker import gpu, shutdown
from worker.jobs import checkpointing
from worker.jobs.claim import claim, end_stale_run
from worker.jobs.finish import Outcome, final_write, stop_write
from worker.jobs.mlflow_run import MlflowRun
from worker.jobs.packed import PackTrainer
from worker.jobs.single import SingleTrainer
from worker.jobs.trainers import JobInputs, JobTrainer, TrainingFailed, prepare
from worker.recording import artifacts, outcome
from worker.recording.dbretry import retry_db
from worker.recording.mlflow_retry import Deadline, MlflowUnavailable
from worker.recording.reporter import Heartbeat, Reporter, Signals, clean
from worker.recording.sender import WorkerSender
from worker.sweeps import pack as P
from worker.sweeps import shared_trials
from worker.training import checkpoint as C

log = logging.getLogger(__name__)

SUPERSEDED = "superseded"


def run_job(job_id: str, settings: Settings) -> str:
    """Train one job by id; returns its final status, 'skipped' when there was nothing to do
    or 'superseded' when another attempt took the job over."""
    got = claim(job_id, settings)
    if got is None:
        return "skipped"
    return JobRun(settings, got).run()


class JobRun:
    def __init__(self, settings: Settings, claimed: Claim):
        self.settings = settings
        self.claim = claimed
        self.fence = claimed.fence
        self.job_id = claimed.fence.job_id
        self.signals = Signals()
        self.heartbeat = Heartbeat(settings, self.fence, self.signals)
        self.reporter = Reporter(settings, self.fence, 0, self.signals)
        self.mlflow = MlflowRun(settings, self.fence, self.reporter, self.signals)
        self.ctx: api.TrialContext | None = None
        self.pruned_at: int | None = None

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
                self.ctx = api.trial_context(self.settings, self.claim)
                # A worker asked to stop (shutdown) or a pause stops this at an epoch boundary,
                # with a checkpoint (checkpointing).
                with shutdown.training(self.signals), checkpointing.Running(self.signals):
                    outcome = self._train()
            except BaseException as exc:  # SoftTimeLimitExceeded derives from Exception too
                outcome = self._failed(exc)
                if not isinstance(exc, Exception):
                    raise
        finally:
            self.reporter.close()
            # The heartbeat keeps the claim alive until the final write went through: a final
            # write that waits out a database outage must not look like a dead worker's.
            self.heartbeat.finishing()
            try:
                result = self._end(outcome)
            finally:
                self.heartbeat.stop()
            if result != SUPERSEDED and self.ctx is not None:
                # Tell Optuna, start the next trials (the superseded leave it to the owner).
                WorkerSender(self.settings).advance_sweep(self.ctx.sweep_id, self.claim.queue)
        return result

    # --- training --------------------------------------------------------------------------

    def _train(self) -> Outcome:
        st = self.settings
        job = prepare(st, self.claim.spec)
        self.reporter.epochs = job.plan.epochs
        trainer = self._trainer(job)
        resume = self._checkpoint()
        if st.mlflow_logging and not self.superseded:
            if resume is None:
                self.mlflow.start(job, self.claim.sweep_id, self.ctx)
            else:
                stored, state = resume
                self.mlflow.resume(job, self.claim.sweep_id, self.ctx, stored.mlflow_run_id,
                                   stored.mlflow_experiment_id, state.epoch)
        self.reporter.on_epochs = api.pruner(st, self.ctx)
        trainer.build()
        try:
            if resume is not None:
                self._restore(trainer, resume[1], job)
            fit_time = self._fit(trainer) + trainer.fit_time_before
            # Every epoch is in MLflow before the artifacts; an MLflow that does not answer
            # now delays the job (bounded), it does not lose the epochs.
            end_deadline = Deadline(st.mlflow_retry_s)
            self.reporter.flush(final=True)
            if self.reporter.mlflow_pending() and not self.superseded:
                self.mlflow.step(self.mlflow.flush_metrics, "logging the last epochs' metrics",
                                 end_deadline)
            stopped = trainer.callback.stopped
            if not stopped:  # a stopped training's trials are recorded by the next attempt
                trainer.record(self.mlflow)
        finally:
            trainer.close()
        if self.superseded:
            return Outcome(JobStatus.failed)  # never written: _end sees the signal
        if stopped:  # a pause or the worker's shutdown: the job goes on from its checkpoint
            return Outcome(JobStatus.paused, stopped=True)
        return self._outcome(job, trainer, fit_time, end_deadline)

    # --- resuming from a checkpoint ----------------------------------------------------------

    def _checkpoint(self) -> tuple[api.StoredCheckpoint, C.State] | None:
        """The checkpoint this attempt goes on from (its claim said so), read; None: from
        scratch (none, or one that cannot be read: the job starts over)."""
        if self.claim.resumed_from_epoch is None:
            return None
        stored = retry_db(self.settings, f"checkpoint of job {self.job_id}",
                          lambda: api.load_checkpoint(self.settings, self.fence))
        try:
            if stored is None:
                raise C.CheckpointMismatch("it is gone")
            return stored, C.from_bytes(stored.state)
        except Exception as exc:
            self._start_over(f"its checkpoint could not be read: {exc}")
            return None

    def _restore(self, trainer: JobTrainer, state: C.State, job: JobInputs) -> None:
        """The checkpoint's state into the built trainer; one that does not fit its models
        starts the job over (a new MLflow run: the one resumed in is ended)."""
        try:
            trainer.restore(state)
        except C.CheckpointMismatch as exc:
            self._start_over(f"its checkpoint does not fit the model: {exc}")
            self.reporter.mlflow = self.reporter.run_id = None
            self.reporter.mlflow_logged = {}
            self.mlflow = MlflowRun(self.settings, self.fence, self.reporter, self.signals)
            if self.settings.mlflow_logging and not self.superseded:
                self.mlflow.start(job, self.claim.sweep_id, self.ctx)
            return
        self.reporter.resumed(trainer.history(), trainer.fit_time_before)
        log.info("job %s: attempt %d goes on after epoch %d, from its checkpoint",
                 self.job_id, self.fence.attempt, state.epoch)

    def _start_over(self, reason: str) -> None:
        log.warning("job %s: attempt %d starts from scratch: %s", self.job_id,
                    self.fence.attempt, reason)
        run_id = retry_db(self.settings, f"start over of job {self.job_id}",
                          lambda: api.start_over(self.settings, self.fence))
        if run_id is not None:
            end_stale_run(self.settings, api.StaleRun(
                run_id, False, f"attempt {self.fence.attempt} of this job could not resume "
                f"from its checkpoint ({reason}) and trained again from scratch in a new run"))

    def _trainer(self, job: JobInputs) -> JobTrainer:
        """A pack when the sweep packed other configurations into this job, else one model."""
        packs = self.ctx is not None and P.is_pack(job.raw, self.ctx.shared)
        return (PackTrainer if packs else SingleTrainer)(
            self.settings, self.fence, self.ctx, self.reporter, self.signals, job)

    def _fit(self, trainer: JobTrainer) -> float:
        """The seconds fit took."""
        self.reporter.fit_started()
        t0 = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - t0

    def _outcome(self, job: JobInputs, trainer: JobTrainer, fit_time: float,
                 end_deadline: Deadline) -> Outcome:
        """The job's status and summary from how fit ended; the run's artifacts."""
        callback, history = trainer.callback, trainer.callback.history
        if callback.nan_epoch is not None:
            raise TrainingFailed(
                f"loss became {history[-1].get('loss')} at epoch {callback.nan_epoch}: training "
                f"diverged. The learning rate {job.spec.compile.optimizer.learning_rate:g} is "
                "probably too high; lower compile.optimizer.learning_rate")
        status = (JobStatus.cancelled if callback.cancelled else
                  JobStatus.pruned if callback.pruned else JobStatus.succeeded)
        summary = {
            "epochs_completed": len(history),
            "stopped_early": not callback.cancelled and len(history) < job.plan.epochs,
            "final_metrics": clean(history[-1]) if history else {},
            "best_loss": min((h["loss"] for h in history), default=None),
            "fit_time_s": round(fit_time, 3),
            "steps_per_execution": job.spe,
            "keras_backend": job.backend,
            "device": gpu.device_summary(),  # what it trained on: a GPU job never runs on a CPU
        }
        best = outcome.best_epoch(history, *outcome.monitored(job.spec, job.plan, self.ctx))
        if best is not None:
            summary["best_epoch"] = best
        if job.chance is not None:
            summary["chance"] = {k: round(v, 6) for k, v in job.chance.items()}
        if callback.pruned:
            self.pruned_at = len(history)
            summary["pruned_at_epoch"] = len(history)
        summary.update(trainer.summary())
        ckpt = trainer.checkpointer
        if ckpt is not None and ckpt.saved:
            summary["checkpoints"] = {"saved": ckpt.saved, "seconds": round(ckpt.seconds, 3),
                                      "last_epoch": ckpt.last_epoch, "bytes": ckpt.last_size}
        # The chance levels were logged when the run started.
        self.mlflow.log_artifacts(job, trainer.model, history, status, end_deadline,
                                  outcome.run_metrics(summary))
        summary["mlflow_errors"] = self.reporter.mlflow_errors
        return Outcome(status, summary)

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
        if self.mlflow.client is not None and self.mlflow.run_id and not self.superseded and \
                not isinstance(exc, MlflowUnavailable):  # the reconciler records that one later
            try:
                artifacts.record_failure(self.mlflow.client, self.mlflow.run_id, error, exc)
            except Exception:
                log.warning("could not record the failure in MLflow", exc_info=True)
        return Outcome(JobStatus.failed, error=error)

    def _end(self, outcome: Outcome) -> str:
        """The last writes: shared trials not reached, the job row, then the MLflow run."""
        if outcome.stopped and not self.superseded:
            return self._stopped()
        if not self.superseded:
            try:
                shared_trials.end_unreached(self.settings, self.fence, self.ctx,
                                            outcome.status, outcome.error)
            except Exception:
                log.warning("ending the unreached shared trials of job %s failed", self.job_id,
                            exc_info=True)
        answer = Ownership.SUPERSEDED if self.superseded else final_write(
            self.settings, self.fence, self.reporter, self.signals, outcome, self.mlflow.run_id)
        self.heartbeat.stop()  # the row has its end (or another owner): nothing to keep alive
        if answer is Ownership.SUPERSEDED:
            return self._superseded()
        self.mlflow.end(outcome.status, outcome.error, self.pruned_at, self.ctx)
        return outcome.status.value

    def _superseded(self) -> str:
        self.signals.answer(Ownership.SUPERSEDED, self.job_id)
        log.warning("job %s: stopped as superseded (attempt %d) after %d epochs; its new "
                    "owner ends MLflow run %s", self.job_id, self.fence.attempt,
                    self.reporter.last_epoch, self.mlflow.run_id)
        return SUPERSEDED

    def _stopped(self) -> str:
        """Training stopped at an epoch boundary on purpose: the job is paused, or queued
        again and sent for the next worker (the shared trials not reached follow it), or
        cancelled when a cancel came meanwhile. Its MLflow run ends KILLED, saying so."""
        st, epoch = self.settings, self.reporter.last_epoch
        status = stop_write(st, self.fence, self.reporter, self.signals)
        if status is None:
            return self._superseded()
        if status == JobStatus.cancelled:
            self.mlflow.end(status, None, None, self.ctx)
            return status.value
        why = "paused" if status == JobStatus.paused else \
            "its worker was shut down; the job went back to the queue"
        self.mlflow.stopped(f"{why} after epoch {epoch} of attempt {self.fence.attempt}")
        if status == JobStatus.queued and WorkerSender(st).train(self.job_id, self.claim.queue):
            try:
                retry_db(st, f"marking job {self.job_id} sent",
                         lambda: api.mark_dispatched(st, self.job_id))
            except Exception:  # sent all the same; a re-send finds it claimed or ended
                log.warning("job %s: could not record the re-send", self.job_id, exc_info=True)
        log.info("job %s: stopped after epoch %d: %s", self.job_id, epoch, why)
        return status.value
