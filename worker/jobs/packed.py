"""A job trained as a pack (:mod:`worker.sweeps.pack`): this job's model is tower 0; each other
configuration the sweep packed into this job is a tower built and compiled exactly as its own
training would build it. TensorFlow fits the towers as one model; the other backends fit them
one after another. Each other tower's trials are recorded like shared trials.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from service import worker_api as api
from service.worker_api import JobStatus
from worker.jobs.trainers import JobTrainer
from worker.recording import outcome
from worker.recording.reporter import clean
from worker.sweeps import pack as P
from worker.sweeps import shared_trials
from worker.training import checkpoint as C
from worker.training import model as M
from worker.training import trainer as F
from worker.training import uploaded as U

log = logging.getLogger(__name__)


class PackTrainer(JobTrainer):
    """This job's model and the pack's other towers, fit together; ``towers[0]`` is this
    job's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.towers: list[P.Tower] = []
        self.pack_fit_s = 0.0
        self.pack = None  # the towers as one model (TensorFlow)

    def build(self) -> None:
        super().build()
        if P.backend_packs():
            x, y, bs = self.job.data.x_train, self.y_train, self.job.plan.batch_size
            self.pack = P.make_pack([t.model for t in self.towers], self.job.spe,
                                    (x[:bs], y[:bs]))

    def _callbacks(self) -> list:
        self.towers = towers = self._towers(self.checkpoint_folder())
        # Every tower reports to its pruner at the epoch's end, in tower order (the
        # reporter's thread would report this job's own tower late and out of turn).
        towers[0].pruner, self.reporter.on_epochs = self.reporter.on_epochs, None
        self.callback = P.pack_callback(
            towers, self.reporter, self.signals, prefixed=P.backend_packs(),
            on_progress=self._progress,
            progress_interval_s=max(self.settings.report_interval_s, 1.0))
        return [self.callback]

    def _towers(self, folder: Path) -> list[P.Tower]:
        """Tower 0 is this job's model; each other configuration the pack carries is built
        and compiled exactly as its own training would build it (same seed, same weights)."""
        import keras

        towers = P.towers_of(self.job.raw, self.job.plan.epochs, self.ctx.shared)
        for t in towers:
            t.checkpoints = {tr.epochs: folder / f"t{t.index}-epoch-{tr.epochs}.keras"
                             for tr in t.trials}
            if t.index == 0:
                t.model = self.model
                continue
            t.spec, t.plan = api.validate(self.settings, t.raw)
            keras.utils.set_random_seed(t.spec.fit.seed)
            up = U.load_uploaded(self.settings, t.spec.model.uploaded) \
                if t.spec.model.uploaded else None  # each tower its own copy of the file
            t.model = M.build_model(t.spec, t.plan, uploaded=up)
            M.compile_model(t.model, t.spec, t.plan, self.job.spe)
            lead = max(t.trials, key=lambda tr: tr.epochs)
            t.pruner = api.pruner(self.settings, self.ctx, lead)
        log.info("job %s trains a pack of %d towers (%d trials)", self.job_id, len(towers),
                 1 + len(self.ctx.shared))
        return towers

    def fit(self) -> None:
        """One fit of the pack (TensorFlow), or each tower's own fit in turn (the backends
        that do not pack); ``callback`` holds this job's own outcome either way."""
        x, y, fit_kw = self.job.data.x_train, self.y_train, self.fit_kw()
        t0 = time.perf_counter()
        try:
            if self.pack is not None:
                F.fit(self.pack, x, y, epochs=self.job.plan.epochs, callbacks=self.callbacks,
                      **fit_kw)
                return
            fit_kw.update(orders=None, initial_epoch=0)  # each tower's own fit from its start
            self.callback = P.fit_in_turn(
                self.towers, self.callback, self.reporter, self.signals,
                lambda t, cb: F.fit(t.model, x, y, epochs=t.epochs, callbacks=[cb], **fit_kw))
        finally:
            self.pack_fit_s = time.perf_counter() - t0

    def active_towers(self) -> list[int] | None:
        """Towers trained together in each epoch (None where the backend fits them in turn:
        each epoch's time is then one tower's own)."""
        if not P.backend_packs() or not self.towers:
            return None
        longest = max(len(t.history) for t in self.towers)
        return [sum(1 for t in self.towers if len(t.history) > i) for i in range(longest)]

    # --- checkpoints: the pack as a whole (TensorFlow; towers fit in turn are not) ----------

    def checkpoints(self) -> bool:
        return P.backend_packs()

    def _state(self, meta: dict, arrays: dict) -> None:
        towers = []
        for t in self.towers:
            p = f"t{t.index}"
            arrays.update(C.model_arrays(t.model, p))
            history, h = C.history_state(t.history, p + "/history")
            saved, f = C.files_state(t.saved, p + "/saved")
            arrays.update(h)
            arrays.update(f)
            towers.append({"key": P.tower_key(t.raw), "index": t.index, "history": history,
                           "saved": saved, "ended": t.ended, "ended_at": t.ended_at,
                           "cancelled": sorted(t.cancelled),
                           "active": t.index in self.callback.active})
        meta["towers"] = towers

    def _stored_towers(self, state) -> list[tuple[P.Tower, dict]]:
        """Each tower with its state in the checkpoint (matched by configuration: a tower
        whose trials were all recorded before the checkpoint's attempt died is not here)."""
        stored = {t["key"]: t for t in state.meta["towers"]}
        missing = [t.index for t in self.towers if P.tower_key(t.raw) not in stored]
        if missing:
            raise C.CheckpointMismatch(f"towers {missing} are not in the checkpoint")
        return [(t, stored[P.tower_key(t.raw)]) for t in self.towers]

    def _check(self, state) -> None:
        for t, st in self._stored_towers(state):
            C.check_model(t.model, state.arrays, f"t{st['index']}")

    def _restore(self, state) -> None:
        leaving = []
        for t, st in self._stored_towers(state):
            p = f"t{st['index']}"
            C.restore_model(t.model, state.arrays, p)
            t.history[:] = C.restore_history(st["history"], state.arrays, p + "/history")
            t.saved.update(C.restore_files(st["saved"], state.arrays, p + "/saved",
                                           t.checkpoints, t.model))
            t.ended, t.ended_at, t.cancelled = st["ended"], st["ended_at"], set(st["cancelled"])
            if not st["active"]:
                leaving.append(t.index)
        P.restore_left(self.callback, self.towers[0], leaving, self.pack)

    def _progress(self) -> None:
        """Live progress of the trials the pack carries; reads which were asked to cancel."""
        progress = {}
        for t in self.towers:
            for tr in t.trials:
                e = min(len(t.history), tr.epochs)
                if e:
                    progress[tr.id] = {"epoch": e, "epochs": tr.epochs,
                                       "metrics": clean(t.history[e - 1])}
        try:
            cancelled = api.recorded_progress(self.settings, self.fence, progress)
        except Exception:
            log.warning("progress write of job %s's pack failed", self.job_id, exc_info=True)
            return
        for t in self.towers:
            t.cancelled = {tr.id for tr in t.trials if tr.id in (cancelled or ())}

    def _own_trials(self) -> list[api.SharedTrial]:
        own = self.towers[0]
        return [tr for tr in own.trials if tr.id not in own.cancelled]

    def record(self, run) -> None:
        super().record(run)
        if not self.superseded:
            self._record_towers(run)

    def _record_towers(self, run) -> None:
        """Each other tower's trials are recorded like shared trials; a tower that diverged
        fails the trials it did not reach with the reason, a pruned one ends pruned; trials
        asked to cancel end cancelled."""
        st = self.settings
        for t in self.towers:
            if self.superseded:
                return
            if t.cancelled:
                api.end_unrecorded(st, sorted(t.cancelled), JobStatus.cancelled,
                                         {"type": "Cancelled", "message": "cancelled while "
                                          f"its tower trained in job {self.job_id}'s pack"},
                                         fence=self.fence)
            if t.index == 0:
                continue  # recorded with this job's own trial
            keep = [tr for tr in t.trials if tr.id not in t.cancelled]
            done = set(shared_trials.record(
                st, self.fence, self.signals, run.client, ctx=self.ctx,
                parent_run_id=run.parent_run_id, trainer_run_id=run.run_id, data=self.job.data,
                history=t.history, saved=t.saved, trials=keep,
                pruned_model=t.model if t.ended == "pruned" else None, timings=self.timings,
                inputs=run.inputs, active=self.active_towers()))
            left = [tr.id for tr in keep if tr.id not in done]
            end = self._unreached_end(t) if left else None
            if end is not None:
                status, error = end
                api.end_unrecorded(st, left, status, error, fence=self.fence)

    def _unreached_end(self, t: P.Tower) -> tuple[JobStatus, dict] | None:
        """How the trials a tower did not reach end: failed when it diverged, pruned when its
        pruner stopped it; None when the training's own end says why (end_unreached)."""
        if t.ended == "diverged":
            h = t.history[-1] if t.history else {}
            return JobStatus.failed, {"type": "TrainingFailed", "message": (
                f"loss became {h.get('loss')} at epoch {t.ended_at}: training diverged. "
                f"The learning rate {t.spec.compile.optimizer.learning_rate:g} is probably "
                "too high; lower compile.optimizer.learning_rate (this trial trained as a "
                f"tower of job {self.job_id}'s pack; the other towers trained on)")}
        if t.ended == "pruned":
            return JobStatus.pruned, {"type": "Pruned", "message": f"its tower was pruned at "
                                      f"epoch {t.ended_at}, before this trial's epochs"}
        return None

    def summary(self) -> dict:
        """The pack's facts (``fit_time_s``: the whole pack's fit), and this job's own
        ``fit_time_s``: its tower's share, like every trial it carries."""
        own = self.towers[0].history if self.towers else []
        return {"fit_time_s": round(outcome.fit_share(own, self.active_towers()), 3),
                "pack": {"towers": len(self.towers), "trials": 1 + len(self.ctx.shared),
                         "packed": P.backend_packs(), "fit_time_s": round(self.pack_fit_s, 3),
                         **{k: round(v, 3) for k, v in self.timings.items()}}}
