"""The job's MLflow run: started before fit (under the sweep's parent run for a trial), its
metrics flushed and its artifacts logged after, its final status set last.

Every call is retried while MLflow does not answer, within a bound (:mod:`worker.recording.
mlflow_retry`), and stops retrying once the claim is superseded. The run is recorded on the
job's row (:func:`service.worker_api.set_run`) before anything else is logged to it.
"""

from __future__ import annotations

import logging
import time

from service import worker_api as api
from service.config import Settings
from service.worker_api import Fence, JobStatus, Ownership
from worker import gpu
from worker.recording import artifacts, inputs, tracking
from worker.recording.mlflow_retry import Deadline, retry
from worker.recording.reporter import Reporter, Signals
from worker.training.chance import TRAINING_DATA_NOTE

log = logging.getLogger(__name__)


class MlflowRun:
    """``client`` and ``run_id`` are None while the job has no run: MLflow logging is off, the
    run is not started yet, or the attempt was superseded before its run was recorded."""

    def __init__(self, settings: Settings, fence: Fence, reporter: Reporter, signals: Signals):
        self.settings = settings
        self.fence = fence
        self.job_id = fence.job_id
        self.reporter = reporter
        self.signals = signals
        self.client = None
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.inputs: list | None = None  # the dataset inputs, for the carried trials' runs too
        # The run's experiment and params as logged (for its logged model); None: read them.
        self.experiment_id: str | None = None
        self.params: dict | None = None

    def step(self, fn, what: str, deadline: Deadline):
        """``fn()`` retried while MLflow does not answer, within ``deadline``
        (:mod:`.mlflow_retry`); MlflowUnavailable after it."""
        return retry(fn, what, self.settings.mlflow_tracking_uri, deadline,
                     stop=lambda: self.signals.superseded.is_set())

    def start(self, job, sweep_id: str | None, ctx: api.TrialContext | None) -> None:
        """The run, its tags, params and reading aids (``job``: the :class:`~.trainers.
        JobInputs`), recorded on the job's row; then its dataset inputs. Superseded at the row:
        the run ends KILLED."""
        st = self.settings
        spec = job.spec
        self.client = cl = tracking.client(st.mlflow_tracking_uri)
        deadline = Deadline(st.mlflow_retry_s)  # one budget for the whole start
        exp_id = self.step(lambda: tracking.experiment_id(cl, spec.experiment),
                           f"looking up experiment {spec.experiment!r}", deadline)
        tags = tracking.base_tags(self.job_id, sweep_id, job.data.digest, job.backend)
        # With the job id, what finds this attempt's run again when a retry follows a lost
        # answer (tracking.start_job_run), and what the reconciler reads.
        tags["kerasyard.attempt"] = str(self.fence.attempt)
        tags.update({f"user.{k}": v for k, v in spec.tags.items()})
        tags.update(gpu.device_tags())
        if spec.model.uploaded:  # the uploaded .keras model it trains (GET /api/v1/models/<id>)
            tags["kerasyard.uploaded_model"] = spec.model.uploaded
        if ctx is not None:
            self.parent_run_id, _ = self.step(
                lambda: tracking.sweep_parent_run(st, cl, ctx.sweep_id),
                "creating the sweep's parent run", deadline)
            tags.update(tracking.child_tags(ctx, self.parent_run_id))
        params = tracking.run_params(job.raw, job.plan, {"steps_per_execution": job.spe,
                                                         "keras_backend": job.backend},
                                     ctx.params if ctx is not None else None)
        # The reading aids go with the run's tags and params: no requests of their own.
        aids, aid_tags = self._reading_aids(job.plan, job.chance)
        tags.update(aid_tags)
        tries: list[bool] = []

        def create() -> str:
            # Only a try after a failed one can have left a run behind to find again.
            tries.append(True)
            return tracking.start_job_run(cl, exp_id, spec.name, tags, params, aids,
                                          retried=len(tries) > 1)

        self.run_id = self.step(create, "creating the job's run and logging its params",
                                deadline)
        self.experiment_id, self.params = exp_id, params
        answer = api.set_run(st, self.fence, self.run_id, exp_id)
        if answer is Ownership.SUPERSEDED:
            # The job row never held this run, so no new owner will end it: end it here.
            self._end_unrecorded("this attempt was superseded before its run was recorded")
            self.signals.answer(answer, self.job_id)
            self.client = self.run_id = None
            return
        self.reporter.mlflow, self.reporter.run_id = cl, self.run_id
        self.inputs = self._dataset_inputs(job)
        self.step(lambda: inputs.log_inputs(cl, self.run_id, self.inputs),
                  "logging the dataset inputs", deadline)

    def resume(self, job, sweep_id: str | None, ctx: api.TrialContext | None,
               run_id: str | None, exp_id: str | None, epoch: int) -> None:
        """A training resumed from its checkpoint at ``epoch`` goes on in the run the job
        trained into (``run_id``): it is recorded on the job's row again, tagged with this
        attempt, and the reporter skips the steps it has already (the attempt before logged
        epochs after its checkpoint too). A run that is gone, deleted or FINISHED is not
        reused: a new one is started and gets every epoch (:meth:`start`)."""
        st = self.settings
        cl = tracking.client(st.mlflow_tracking_uri)
        deadline = Deadline(st.mlflow_retry_s)
        run = self.step(lambda: self._reusable(cl, run_id), "reading the job's run", deadline)
        if run is None:
            log.warning("job %s: MLflow run %s cannot be resumed; starting a new run",
                        self.job_id, run_id)
            return self.start(job, sweep_id, ctx)
        self.client, self.run_id = cl, run_id
        if ctx is not None:
            self.parent_run_id, _ = self.step(
                lambda: tracking.sweep_parent_run(st, cl, ctx.sweep_id),
                "reading the sweep's parent run", deadline)
        answer = api.set_run(st, self.fence, run_id, exp_id)
        if answer is Ownership.SUPERSEDED:  # the job's run still: its new owner goes on in it
            self.signals.answer(answer, self.job_id)
            self.client = self.run_id = None
            return
        self.step(lambda: self._reopen(cl, run_id, epoch), "tagging the resumed run", deadline)
        self.reporter.mlflow_logged = self.step(lambda: tracking.logged_steps(cl, run_id),
                                                "reading the run's logged steps", deadline)
        self.reporter.mlflow, self.reporter.run_id = cl, run_id
        self.inputs = self._dataset_inputs(job)

    @staticmethod
    def _reusable(cl, run_id: str | None):
        """The run, when a resumed attempt can go on in it."""
        if not run_id:
            return None
        try:
            run = cl.get_run(run_id)
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                return None
            raise
        if run.info.lifecycle_stage != "active" or run.info.status == "FINISHED":
            return None
        return run

    def _reopen(self, cl, run_id: str, epoch: int) -> None:
        if cl.get_run(run_id).info.status != "RUNNING":  # ended by a reconciler meanwhile
            cl.update_run(run_id, status="RUNNING")
        cl.set_tag(run_id, "kerasyard.attempt", str(self.fence.attempt))
        cl.set_tag(run_id, "kerasyard.resumed_from_epoch", str(epoch))

    def _dataset_inputs(self, job) -> list:
        """The job's training and validation data as MLflow dataset inputs (an upload named
        by its name when the database says it; by its id otherwise)."""
        ds = job.spec.dataset
        upload = None
        if getattr(ds, "kind", None) == "upload":
            try:
                upload = api.upload_label(self.settings, ds.id)
            except Exception:
                log.warning("could not read upload %s's name", ds.id, exc_info=True)
        return inputs.dataset_inputs(job.spec, job.data, upload)

    @staticmethod
    def _reading_aids(plan, chance: dict[str, float] | None) -> tuple[list, dict[str, str]]:
        """The chance-level loss and accuracy beside the run's metrics (step 0) and, without
        held-out data, a description saying its metrics are on the training data (tags)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"chance_{k}", v, now, 0) for k, v in (chance or {}).items()]
        tags = {} if plan.n_val else {"mlflow.note.content": TRAINING_DATA_NOTE,
                                      "kerasyard.metrics_on": "training"}
        return metrics, tags

    def _end_unrecorded(self, reason: str) -> None:
        try:
            self.client.set_tag(self.run_id, "kerasyard.error", reason)
            self.client.set_terminated(self.run_id, "KILLED")
        except Exception:
            log.warning("could not end MLflow run %s", self.run_id, exc_info=True)

    def flush_metrics(self) -> None:
        """The epochs the reporter has not logged yet; ConnectionError while some are left."""
        self.reporter.flush_mlflow()
        if self.reporter.mlflow_pending():
            raise ConnectionError(f"log_batch of {self.reporter.mlflow_pending()} epochs failed "
                                  f"({self.reporter.mlflow_last_error})")

    def log_artifacts(self, job, model, history: list[dict], status: JobStatus,
                      deadline: Deadline, metrics: dict[str, float] | None = None) -> None:
        """The run's single-value ``metrics`` (its best epoch, fit time: :mod:`worker.
        recording.outcome`), its artifacts and, for a job that succeeded, its model
        (``log_model``)."""
        st = self.settings
        superseded = self.signals.superseded.is_set
        if self.client is None or superseded():
            return
        if metrics:
            self.step(lambda: tracking.log_values(self.client, self.run_id, metrics),
                      "logging the run's best epoch and fit time", deadline)
        self.step(lambda: artifacts.write_artifacts(
            self.client, self.run_id, job.raw, job.spec, job.plan, model, job.data, history,
            lean=st.lean_recording), "logging the run's artifacts", deadline)
        if status == JobStatus.succeeded and st.log_model and not superseded():
            self.step(lambda: artifacts.log_model(st, model, job.data, self.run_id,
                                                  experiment_id=self.experiment_id,
                                                  params=self.params),
                      "logging the model", deadline)

    def end(self, status: JobStatus, error: dict | None, pruned_at: int | None,
            ctx: api.TrialContext | None) -> None:
        """The run's final status, once the job's row has its end."""
        if self.client is None or not self.run_id:
            return
        gave_up = (error or {}).get("type") == "MlflowUnavailable"
        # The job row has its end already; MLflow gets it within the bound (one try when the
        # bound was spent already), or from the reconciler (worker.reconcile_runs) once it
        # answers again.
        deadline = Deadline(0 if gave_up else self.settings.mlflow_retry_s)
        try:
            self.step(lambda: self._end_tags_and_status(status, pruned_at, ctx),
                      "ending the run", deadline)
        except Exception:
            log.warning("could not end MLflow run %s; the reconciler will", self.run_id,
                        exc_info=True)

    def stopped(self, why: str) -> None:
        """The attempt stopped at an epoch boundary on purpose and the job goes on (paused,
        or queued for the next worker): its run ends KILLED with ``kerasyard.stopped``
        saying why. Best effort, within the bound."""
        if self.client is None or not self.run_id:
            return
        cl, run_id = self.client, self.run_id

        def end() -> None:
            cl.set_tag(run_id, "kerasyard.stopped", why[:5000])
            cl.set_terminated(run_id, "KILLED")

        try:
            self.step(end, "ending the stopped run", Deadline(self.settings.mlflow_retry_s))
        except Exception:
            log.warning("could not end MLflow run %s of stopped job %s", run_id, self.job_id,
                        exc_info=True)

    def _end_tags_and_status(self, status: JobStatus, pruned_at: int | None,
                             ctx: api.TrialContext | None) -> None:
        cl, run_id = self.client, self.run_id
        if status == JobStatus.pruned:
            cl.set_tag(run_id, "kerasyard.pruned", "true")
            cl.set_tag(run_id, "kerasyard.pruned_at_epoch", str(pruned_at))
            cl.set_tag(run_id, "mlflow.note.content",
                       f"**Pruned** at epoch {pruned_at} by the sweep's "
                       f"{ctx.early_stopping if ctx else ''} pruner: its "
                       "objective was worse than the other trials' at the same epoch.")
        if ctx is not None:
            cl.set_tag(run_id, "kerasyard.trial_state", status.value)
        cl.set_terminated(run_id, tracking.MLFLOW_RUN_STATUS[status])
