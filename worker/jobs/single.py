"""A job trained as one model: this job's own, fit once.

The sweep's shared trials it carries (its configuration with fewer epochs) are recorded from
checkpoints saved at their epochs (:mod:`worker.sweeps.shared_trials`).
"""

from __future__ import annotations

from worker.jobs.trainers import JobTrainer
from worker.recording.reporter import epoch_callback
from worker.sweeps import shared_trials
from worker.training import trainer as F


class SingleTrainer(JobTrainer):
    """This job's own model, with the spec's early stopping."""

    def _callbacks(self) -> list:
        import keras

        self.callback = epoch_callback(self.reporter, self.signals, shared_trials.checkpoints(
            self.ctx, self.checkpoint_folder()) if self.ckpt_dir else None)
        callbacks = [self.callback]
        es = self.job.spec.fit.early_stopping
        if es is not None:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights))
        return callbacks

    def fit(self) -> None:
        data = self.job.data
        F.fit(self.model, data.x_train, self.y_train, epochs=self.job.plan.epochs,
              callbacks=self.callbacks, **self.fit_kw())
