"""A job's lifecycle: every change of a job's state goes through this package.

    queued --claim--> running --finish--> succeeded | failed | cancelled | pruned
      ^                  |
      +----requeue-------+   (its worker went silent; or stop: its worker was shut down)

    queued | running --pause--> paused   (a running job at its next epoch boundary: stop)
    paused --resume--> queued            paused --cancel--> cancelled

- :mod:`.rows`: the states a worker's write can find (:class:`Ownership`), its
  :class:`Fence`, and the changes made to a row inside the caller's transaction:
  :func:`end` is the one place a row becomes terminal (the API's cancel, the sweep scheduler
  and the fenced :func:`finish` all call it), :func:`start`, :func:`cancel`.
- :mod:`.claims`: who holds a job. :func:`dispatch` sends a committed job's id,
  :func:`claim` takes it for one worker and gives it a :class:`Fence` (a new attempt number),
  :func:`requeue_stale` takes it back from a worker that went silent.
- :mod:`.fenced`: every later write of the worker that holds the claim (heartbeat, epochs,
  progress, its run id, the final status, the trials recorded from its training), each
  conditional on the job still being ``running`` on that attempt. A worker that has been
  superseded (its job requeued or taken over after a stale heartbeat) writes nothing: its
  calls answer :data:`SUPERSEDED` and it stops at the next epoch boundary. Per-epoch rows are
  written idempotently (a row that is there already is kept).
- :mod:`.pausing`: :func:`pause` and :func:`resume` (the commands), and :func:`stop`, the
  fenced last write of an attempt that stopped at an epoch boundary on purpose (a pause, or
  its worker asked to shut down): ``paused``, or ``queued`` for the next worker.
- :mod:`.checkpoints`: a job's newest checkpoint, written fenced (:func:`save_checkpoint`);
  the claim of the next attempt goes on from it (:func:`carry_on`, :func:`resume_point`),
  which reads it (:func:`load_checkpoint`) or, when it does not fit, starts over
  (:func:`start_over`).
- :mod:`.lost`: a job whose training child the kernel killed for memory fails saying so
  (:func:`fail_out_of_memory`); :func:`job_ends` is what the worker's MLflow reconciler reads.

The worker reaches these through :mod:`service.worker_api` only. Nothing here talks to
MLflow or Celery, and nothing here knows MLflow's terms: a claim that takes over a dead
worker's job hands back that attempt's MLflow run id (:class:`StaleRun`) for the worker to
end after the transaction (never under the row lock), and the worker decides how each end of
a job shows in MLflow.
"""

from service.lifecycle.checkpoints import (
    StoredCheckpoint,
    carry_on,
    load_checkpoint,
    resume_point,
    save_checkpoint,
    start_over,
)
from service.lifecycle.claims import (
    Sender,
    claim,
    dispatch,
    mark_dispatched,
    owner_alive,
    requeue_stale,
)
from service.lifecycle.fenced import (
    end_unrecorded,
    finish,
    finish_recorded,
    finished_by,
    heartbeat,
    insert_epochs,
    record_epochs,
    recorded_progress,
    set_run,
    start_recorded,
    still_owned,
)
from service.lifecycle.lost import JobEnd, fail_out_of_memory, job_ends
from service.lifecycle.pausing import PAUSABLE, pause, resumable, resume, stop, stopped_as
from service.lifecycle.rows import (
    CANCEL,
    OWNED,
    PAUSE,
    SUPERSEDED,
    Claim,
    Fence,
    Ownership,
    Skip,
    StaleRun,
    cancel,
    end,
    fail_unstarted,
    initial_progress,
    start,
    worker_id,
)

__all__ = [
    "CANCEL", "OWNED", "PAUSE", "PAUSABLE", "SUPERSEDED", "Claim", "Fence", "JobEnd",
    "Ownership", "Sender", "Skip", "StaleRun", "cancel", "claim", "dispatch", "end",
    "end_unrecorded", "fail_out_of_memory", "fail_unstarted", "finish", "finish_recorded",
    "finished_by", "heartbeat", "initial_progress", "insert_epochs", "job_ends",
    "mark_dispatched", "owner_alive", "pause", "record_epochs", "recorded_progress",
    "requeue_stale", "resumable", "resume", "set_run", "start", "start_recorded",
    "still_owned", "stop", "stopped_as", "worker_id",
    "StoredCheckpoint", "save_checkpoint", "load_checkpoint", "start_over", "resume_point",
    "carry_on",
]
