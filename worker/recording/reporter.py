"""What a training tells the world while it runs, from two background threads.

- :class:`Reporter` batches the epochs fit hands it to the database
  (:func:`service.worker_api.record_epochs`, fenced and idempotent, and a heartbeat too) and
  to MLflow, at the pace of :mod:`worker.recording.pace`: every ``report_interval_s`` at
  first, backing off to ``report_interval_max_s``.
- :class:`Heartbeat` calls :func:`service.worker_api.heartbeat` (one row update) when the
  reporter has written nothing for longer than ``report_interval_max_s``: so nothing else the
  worker waits on (an MLflow call that hangs, a slow flush, the run's last writes) can make a
  live job look dead, and a training makes one write per interval, not two.
- :func:`epoch_callback`: the Keras callback that feeds the reporter and stops training at
  an epoch boundary on NaN, cancel, a sweep's pruner, a superseded claim, or a stop with
  checkpoint (a pause, the worker's shutdown).

Both threads answer to the same :class:`Signals`: a fenced write that answers CANCEL sets
``cancel``; PAUSE sets ``stop_with_checkpoint``; SUPERSEDED sets ``superseded``, after which
neither thread writes anything more.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from service import worker_api as api
from service.config import Settings
from service.worker_api import Fence, Ownership
from worker.recording import tracking
from worker.recording.pace import Pace

log = logging.getLogger(__name__)

# A slow MLflow server gets fewer calls: after a log_batch that took t seconds (answered or
# not) the next waits at least t / share, at most MLFLOW_WAIT_MAX_S, where the share is
# MLFLOW_CALL_SHARE or KERASYARD_MLFLOW_MAX_DUTY when that is larger. A fleet's trainings then
# share a loaded server instead of queueing on it until their calls time out (bench/fleet.py,
# docs/fleet.md); an idle server (a call in 20-50 ms) sees no change.
MLFLOW_CALL_SHARE = 0.05
MLFLOW_WAIT_MAX_S = 60.0


@dataclasses.dataclass
class Signals:
    """Why training should stop at the next epoch boundary (set from any thread)."""

    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    prune: threading.Event = dataclasses.field(default_factory=threading.Event)
    superseded: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Stop at the next epoch boundary with a checkpoint (worker.jobs.checkpointing saves it),
    # without ending the job: a fenced write answered PAUSE, or the worker was asked to shut
    # down (worker/shutdown.py). The attempt then ends through service.worker_api.stop
    # (paused, or queued for the next worker), and the next attempt goes on from it.
    stop_with_checkpoint: threading.Event = dataclasses.field(default_factory=threading.Event)
    # time.monotonic() of the reporter's last fenced write that went through (it counts as a
    # heartbeat: the Heartbeat thread beats only when this is older than its interval).
    progress_written_at: float = -math.inf

    def answer(self, ownership: Ownership, job_id: str) -> None:
        """Act on what a fenced write found."""
        if ownership is Ownership.CANCEL:
            self.cancel.set()
        elif ownership is Ownership.PAUSE and not self.stop_with_checkpoint.is_set():
            log.info("job %s: asked to pause; stopping at the next epoch boundary", job_id)
            self.stop_with_checkpoint.set()
        elif ownership is Ownership.SUPERSEDED and not self.superseded.is_set():
            log.warning("job %s: superseded (another attempt owns it, or it ended); stopping "
                        "without writing anything more", job_id)
            self.superseded.set()


def clean(metrics: dict) -> dict:
    """JSON-safe metrics: NaN/inf become None (they are not valid JSON)."""
    return {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None)
            for k, v in metrics.items()}


class Heartbeat:
    """A thread that keeps the claim alive: one fenced row update per interval in which the
    reporter wrote nothing (default ``report_interval_max_s``, at most a quarter of
    ``stale_heartbeat_s``: :attr:`Settings.report_bound_s`)."""

    def __init__(self, settings: Settings, fence: Fence, signals: Signals,
                 interval_s: float | None = None):
        self.settings, self.fence, self.signals = settings, fence, signals
        self.interval_s = interval_s if interval_s is not None else settings.report_bound_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"heartbeat-{fence.job_id}")
        self.beats = 0
        self.failing = False
        self._finishing = False

    def start(self) -> None:
        self._thread.start()

    def finishing(self) -> None:
        """The run's last writes begin: beat on (a final write that waits out a database
        outage keeps the claim alive), but act on no answer: the final write's own answer
        says whether the claim still held, and a beat after it lands finds the job ended."""
        self._finishing = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.signals.superseded.is_set():
                return
            # The reporter's last write was a heartbeat too. 1.5: a reporter at the bound
            # writes every interval plus its write's time, which must not cost a beat each.
            if time.monotonic() - self.signals.progress_written_at < 1.5 * self.interval_s:
                continue
            try:
                answer = api.heartbeat(self.settings, self.fence)
            except Exception as exc:
                # Never dies: a database outage costs beats, not the claim (until the beat is
                # older than stale_heartbeat_s). One traceback per outage.
                log.log(logging.DEBUG if self.failing else logging.WARNING,
                        "heartbeat of job %s failed; will retry: %s", self.fence.job_id,
                        type(exc).__name__, exc_info=not self.failing)
                self.failing = True
                continue
            self.failing = False
            self.beats += 1
            if not self._finishing:
                self.signals.answer(answer, self.fence.job_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class Reporter:
    """Hands epochs to the database and MLflow from a background thread.

    fit() only appends to a list. Every interval of its :class:`Pace` (``report_interval_s``
    growing to ``report_interval_max_s``) the thread writes the new epochs and the progress to
    the database in one fenced transaction that also reads the cancel flag and counts as the
    heartbeat. MLflow gets one log_batch at most every ``mlflow_flush_interval_s`` (or the
    pace's interval, or 20 times the last call's time, when longer), sized so that its calls
    fill at most ``mlflow_max_duty`` of the wall clock (see _mlflow_share).
    """

    def __init__(self, settings: Settings, fence: Fence, epochs: int, signals: Signals):
        self.settings = settings
        self.fence = fence
        self.epochs = epochs
        self.signals = signals
        self.run_id: str | None = None
        self.mlflow = None
        self._pending_db: list[tuple[int, dict]] = []
        self._pending_mlflow: list[tuple[int, dict]] = []
        # Each epoch's MLflow timestamp, from its first send until a send is answered: a batch
        # whose answer was lost goes again with the same rows, which MLflow keeps once.
        self._mlflow_stamps: dict[int, int] = {}
        self._lock = threading.Lock()  # the pending lists
        self._flushing = threading.Lock()  # one flush at a time, so writes keep their order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"reporter-{fence.job_id}")
        self._t0 = time.monotonic()
        self._last_mlflow = time.monotonic()
        # Seconds of MLflow call per metric value, learned from each call (fixed costs included,
        # so small batches overestimate it: the safe side).
        self._cost_per_value = 2e-4
        self._mlflow_wait = 0.0  # seconds the next call waits after the last (see above)
        self.mlflow_errors = 0
        self.mlflow_last_error: str | None = None  # "Type: message" of the last failed call
        self._db_failing = False
        self.last_epoch = 0  # the last epoch fit finished
        # A resumed training: its fit seconds before the checkpoint (elapsed and ETA count
        # them), and the steps its MLflow run has of each metric already (not logged again).
        self.elapsed_before = 0.0
        self.mlflow_logged: dict[str, int] = {}
        # Called from this thread with each batch of new epochs; True stops training (a sweep
        # trial's pruner).
        self.on_epochs: Callable[[list[tuple[int, dict]]], bool] | None = None
        self.pace = Pace(settings.report_interval_s, settings.report_bound_s)

    @property
    def job_id(self) -> str:
        return self.fence.job_id

    def start(self) -> None:
        self._thread.start()

    def fit_started(self) -> None:
        self._t0 = time.monotonic()  # elapsed and ETA count from here

    def resumed(self, history: list[dict], elapsed_before: float) -> None:
        """A training resumed after ``len(history)`` epochs (``history``: theirs, from the
        checkpoint; the database has them): MLflow gets those its run does not have yet."""
        self.last_epoch = len(history)
        self.elapsed_before = elapsed_before
        pending = list(enumerate(history, start=1))
        if self.mlflow_logged:
            pending = self._not_logged(pending)
        with self._lock:
            self._pending_mlflow[:0] = pending

    def db_pending(self) -> int:
        """Epochs the database has not taken yet (kept after a failed write)."""
        with self._lock:
            return len(self._pending_db)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.last_epoch = epoch
        with self._lock:
            self._pending_db.append((epoch, metrics))
            self._pending_mlflow.append((epoch, metrics))

    def _loop(self) -> None:
        while not self._stop.wait(self.pace.interval):
            started = time.monotonic()
            self.flush()
            self.pace.wrote(time.monotonic() - started)

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
        every = max(self.settings.mlflow_flush_interval_s, 0.9 * self.pace.interval,
                    self._mlflow_wait)
        if not self._pending_mlflow or now - self._last_mlflow < every:
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

    def flush(self, final: bool = False, raise_db_errors: bool = False) -> None:
        """The database first (progress, the cancel flag and the fence), then MLflow.

        A database write that fails keeps its epochs for the next flush (and, with
        ``raise_db_errors``, raises: the run's end retries it before the final write)."""
        with self._flushing:
            if self.signals.superseded.is_set():
                return
            with self._lock:
                db_batch, self._pending_db = self._pending_db, []
            if not self._write_db(db_batch, raise_db_errors):
                return
            if self.signals.superseded.is_set():
                return  # nothing more goes anywhere: the new owner ends our MLflow run
            self._write_mlflow(final)
            if self.on_epochs is not None and db_batch:
                try:
                    if self.on_epochs(db_batch):
                        self.signals.prune.set()
                except Exception:
                    log.warning("reporting to the sweep's pruner failed", exc_info=True)

    def flush_mlflow(self) -> None:
        """MLflow's share of a final flush alone. After fit the epochs go to MLflow even while
        the database does not answer (the run's end retries the database on its own); a
        worker known to be superseded writes nothing."""
        with self._flushing:
            if not self.signals.superseded.is_set():
                self._write_mlflow(final=True)

    def _write_db(self, batch: list[tuple[int, dict]], raise_errors: bool = False) -> bool:
        progress = self.progress(batch[-1]) if batch else None
        try:
            answer = api.record_epochs(self.settings, self.fence,
                                             [(e, clean(m)) for e, m in batch], progress)
        except Exception as exc:
            with self._lock:
                self._pending_db[:0] = batch
            if raise_errors:
                raise
            # One traceback per outage, then one line per try (4 a second during an outage).
            log.log(logging.DEBUG if self._db_failing else logging.WARNING,
                    "progress write of job %s failed (%d epochs kept); will retry: %s",
                    self.job_id, len(self._pending_db), type(exc).__name__,
                    exc_info=not self._db_failing)
            self._db_failing = True
            return False
        self._db_failing = False
        self.signals.progress_written_at = time.monotonic()
        self.signals.answer(answer, self.job_id)
        return True

    def progress(self, last: tuple[int, dict]) -> dict:
        epoch, metrics = last
        elapsed = self.elapsed_before + time.monotonic() - self._t0
        eta = elapsed / epoch * (self.epochs - epoch) if epoch else None
        return {"epoch": epoch, "epochs": self.epochs, "metrics": clean(metrics),
                "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 3)}

    def mlflow_pending(self) -> int:
        """Epochs MLflow has not taken yet (they are kept after a failed call)."""
        if self.mlflow is None or not self.run_id:
            return 0
        with self._lock:
            return len(self._pending_mlflow)

    def _wait_after(self, took_s: float) -> float:
        """The least wait before the next MLflow call after one that took ``took_s``."""
        share = max(MLFLOW_CALL_SHARE, self.settings.mlflow_max_duty)
        return min(MLFLOW_WAIT_MAX_S, took_s / share)

    def _write_mlflow(self, final: bool) -> None:
        if self.mlflow is None or not self.run_id:
            return
        with self._lock:
            batch = self._mlflow_share(final)
        if self.mlflow_logged:
            batch = self._not_logged(batch)
        if not batch:
            return
        started = time.monotonic()
        try:
            tracking.log_epochs(self.mlflow, self.run_id, batch, stamps=self._mlflow_stamps)
        except Exception as exc:
            self._mlflow_wait = self._wait_after(time.monotonic() - started)
            self._last_mlflow = time.monotonic()
            self.mlflow_errors += 1
            self.mlflow_last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.warning("MLflow log_batch failed; will retry", exc_info=True)
            with self._lock:  # keep them for the next flush
                self._pending_mlflow[:0] = batch
            return
        took = time.monotonic() - started
        self._last_mlflow = time.monotonic()
        self._mlflow_wait = self._wait_after(took)
        for epoch, _ in batch:
            self._mlflow_stamps.pop(epoch, None)
        values = sum(len(m) for _, m in batch)
        self._cost_per_value = 0.5 * self._cost_per_value + 0.5 * took / max(values, 1)

    def _not_logged(self, batch: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
        """A resumed run's epochs less the metrics its run has at those steps already (the
        attempt before logged them after its checkpoint, the same values but epoch_time_s)."""
        last = max(self.mlflow_logged.values())
        out = []
        for epoch, metrics in batch:
            if epoch > last:
                out.append((epoch, metrics))
                continue
            left = {k: v for k, v in metrics.items() if epoch > self.mlflow_logged.get(k, 0)}
            if left:
                out.append((epoch, left))
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.flush(final=True)
        except Exception:
            log.warning("final progress flush of job %s failed", self.job_id, exc_info=True)


def epoch_callback(reporter: Reporter, signals: Signals,
                   checkpoints: dict[int, Path] | None = None):
    """``checkpoints`` maps epoch -> path: the model is saved there at the end of that epoch
    (the shared trials recorded from this training)."""
    import keras

    checkpoints = checkpoints or {}

    class EpochReporter(keras.callbacks.Callback):
        """Per epoch: metrics + learning rate + epoch time to the reporter; NaN, superseded,
        cancel, a sweep's pruner and a stop with checkpoint (``stopped``: before the last
        epoch) stop training at the epoch boundary."""

        def __init__(self):
            super().__init__()
            self.history: list[dict[str, float]] = []
            self.nan_epoch: int | None = None
            self.superseded = self.cancelled = self.pruned = self.stopped = False
            self.saved: dict[int, Path] = {}
            # The epoch training stopped at, with a checkpoint, on signals.stop_with_checkpoint
            # (worker.jobs.checkpointing); None when it did not stop so.
            self.checkpointed_epoch: int | None = None
            self._t = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if signals.superseded.is_set():  # not even this epoch is ours to report
                self.superseded = True
                self.model.stop_training = True
                return
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
            elif signals.cancel.is_set():
                self.cancelled = True
                self.model.stop_training = True
            elif signals.prune.is_set():
                self.pruned = True
                self.model.stop_training = True
            elif signals.stop_with_checkpoint.is_set() and epoch + 1 < reporter.epochs:
                self.stopped = True
                self.model.stop_training = True

    return EpochReporter()
