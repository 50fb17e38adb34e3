"""A job trained as one model: this job's own, fit once.

The sweep's shared trials it carries (its configuration with fewer epochs) are recorded from
checkpoints saved at their epochs (:mod:`worker.sweeps.shared_trials`).
"""

from __future__ import annotations

from worker.jobs.trainers import JobTrainer
from worker.recording.reporter import epoch_callback
from worker.sweeps import shared_trials
from worker.training import checkpoint as C
from worker.training import trainer as F


class SingleTrainer(JobTrainer):
    """This job's own model, with the spec's early stopping."""

    early_stopping = None  # its keras.callbacks.EarlyStopping, when the spec asks for one
    _early_stopping_state: tuple[dict, dict] | None = None  # restored after on_train_begin

    def _callbacks(self) -> list:
        import keras

        self.saved_paths = shared_trials.checkpoints(self.ctx, self.checkpoint_folder()) \
            if self.ckpt_dir else {}
        self.callback = epoch_callback(self.reporter, self.signals, self.saved_paths or None)
        callbacks = [self.callback]
        es = self.job.spec.fit.early_stopping
        if es is not None:
            self.early_stopping = keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights)
            callbacks.append(self.early_stopping)
        return callbacks

    def fit(self) -> None:
        data = self.job.data
        F.fit(self.model, data.x_train, self.y_train, epochs=self.job.plan.epochs,
              callbacks=self.callbacks, **self.fit_kw())

    # --- checkpoints -------------------------------------------------------------------------

    def _state(self, meta: dict, arrays: dict) -> None:
        arrays.update(C.model_arrays(self.model, "model"))
        meta["history"], history = C.history_state(self.callback.history, "history")
        meta["saved"], saved = C.files_state(self.callback.saved, "saved")
        arrays.update(history)
        arrays.update(saved)
        if self.early_stopping is not None:
            meta["early_stopping"], best = C.early_stopping_state(self.early_stopping)
            arrays.update(best)

    def _check(self, state: C.State) -> None:
        C.check_model(self.model, state.arrays, "model")
        if (self.early_stopping is None) != ("early_stopping" not in state.meta):
            raise C.CheckpointMismatch("early stopping differs from the checkpoint's")

    def _restore(self, state: C.State) -> None:
        C.restore_model(self.model, state.arrays, "model")
        self.callback.history[:] = C.restore_history(state.meta["history"], state.arrays,
                                                     "history")
        self.callback.saved.update(C.restore_files(state.meta["saved"], state.arrays, "saved",
                                                   self.saved_paths, self.model))
        if self.early_stopping is not None:
            self._early_stopping_state = state.meta["early_stopping"], state.arrays

    def after_train_begin(self) -> None:
        if self._early_stopping_state is not None:
            C.restore_early_stopping(self.early_stopping, *self._early_stopping_state)
