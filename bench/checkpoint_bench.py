"""What checkpoints cost: the lecture job's fit with and without them, in one run.

    .venv/bin/python -m bench.checkpoint_bench [--epochs 3000] [--repeats 3]
                                               [--interval 30] [--database-url URL]

(from the repository root). The lecture example (examples/lecture_mlp.json, ``--epochs``
epochs) is trained the way a worker trains it: claimed from a jobs database (a throwaway
SQLite file by default, the embedded stack's; ``--database-url`` a migrated PostgreSQL),
the worker's trainer (:class:`worker.jobs.single.SingleTrainer`) with its reporter thread
writing the epoch rows, MLflow off. Each repeat fits it twice, alternating which goes first:

- ``with``: checkpoints every ``--interval`` seconds (default: ``KERASYARD_CHECKPOINT_S``'s
  default), written to the database (:mod:`worker.jobs.checkpointing`);
- ``without``: ``KERASYARD_CHECKPOINT_S=0``.

Printed: each fit's seconds; the median of the pair-wise ratios with / without (min-max);
the seconds the checkpoints took inside the ``with`` fits as a share of those fits (what
they cost, without the noise of two fits); the mean seconds per checkpoint and what that is
at the interval. Target: with / without <= 1.02. Then a checkpoint's size for the lecture
MLP at the end of its epochs and for the digits CNN (examples/digits_cnn.json) after 2
epochs (a checkpoint grows by 9 bytes per metric per epoch: the history).

The default of 3,000 epochs keeps the lecture job's fit past the default 30 s interval on a
2-core machine, so that the ``with`` fits take a checkpoint at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # the worker's default (one TF thread)
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.02


def settings_for(database_url: str | None, folder: Path, interval: float):
    from service.config import Settings
    from service.migrate import upgrade

    url = database_url or f"sqlite:///{folder / 'bench.db'}"
    s = dataclasses.replace(Settings.from_env(), data_dir=folder, database_url=url,
                            broker_url="memory://", mlflow_logging=False, checkpoint_s=interval)
    if database_url is None:
        upgrade(url)
    return s


def train(settings, spec: dict):
    """One job of ``spec`` claimed and fit as a worker fits it; (fit seconds, trainer)."""
    from service import worker_api as api
    from service.jobspec import validate_job
    from service.store.db import session_scope
    from service.store.models import Job
    from worker.jobs.single import SingleTrainer
    from worker.jobs.trainers import prepare
    from worker.recording.reporter import Reporter, Signals

    parsed, plan = validate_job(spec)
    with session_scope(settings.database_url) as s:
        row = Job(name=parsed.name, experiment=parsed.experiment,
                  spec=parsed.model_dump(mode="json"), plan=plan.as_dict(), queue="bench")
        s.add(row)
    got = api.claim(settings, row.id)
    signals = Signals()
    reporter = Reporter(settings, got.fence, plan.epochs, signals)
    job = prepare(settings, got.spec)
    trainer = SingleTrainer(settings, got.fence, None, reporter, signals, job)
    trainer.build()
    reporter.start()
    try:
        reporter.fit_started()
        t0 = time.perf_counter()
        trainer.fit()
        took = time.perf_counter() - t0
    finally:
        reporter.close()
    api.finish(settings, got.fence, api.JobStatus.succeeded)
    return took, trainer


def state_size(trainer) -> int:
    from worker.training import checkpoint as C

    return len(C.to_bytes(trainer.state(len(trainer.callback.history), 0.0)))


def main(argv: list[str] | None = None) -> int:
    from service.config import Settings

    default_interval = Settings.__dataclass_fields__["checkpoint_s"].default
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interval", type=float, default=default_interval)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    import keras

    lecture = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    lecture["fit"]["epochs"] = args.epochs
    print(f"checkpoint bench: Keras {keras.__version__} on {keras.backend.backend()}, lecture "
          f"job {args.epochs} epochs, interval {args.interval:g} s, {args.repeats} repeat(s), "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="kerasyard-ckpt-bench-") as tmp:
        folder = Path(tmp)
        with_ = settings_for(args.database_url, folder, args.interval)
        modes = {"with": with_, "without": dataclasses.replace(with_, checkpoint_s=0.0)}
        fits: dict[str, list[float]] = {"with": [], "without": []}
        cost, saved, size = 0.0, 0, None
        for r in range(args.repeats):
            order = ["with", "without"] if r % 2 == 0 else ["without", "with"]
            for mode in order:
                took, trainer = train(modes[mode], lecture)
                fits[mode].append(took)
                ckpt = trainer.checkpointer
                if ckpt is not None:
                    cost, saved = cost + ckpt.seconds, saved + ckpt.saved
                    size = state_size(trainer)
                print(f"  repeat {r + 1} {mode:>7}: fit {took:7.2f} s"
                      + (f", {ckpt.saved} checkpoint(s) in {ckpt.seconds:.3f} s"
                         if ckpt is not None else ""), flush=True)
        digits = json.loads((ROOT / "examples" / "digits_cnn.json").read_text())
        digits["fit"]["epochs"] = 2
        _, cnn = train(modes["with"], digits)
        cnn_size = state_size(cnn)

    ratios = [a / b for a, b in zip(fits["with"], fits["without"])]
    ratio = statistics.median(ratios)
    print(f"\nfit with / without checkpoints (median of {len(ratios)} pairs): {ratio:.3f} "
          f"[{min(ratios):.3f}-{max(ratios):.3f}]  target <= {TARGET}: "
          f"{'met' if ratio <= TARGET else 'missed'}")
    share = cost / sum(fits["with"])
    print(f"checkpoint time inside the 'with' fits: {cost:.3f} s of {sum(fits['with']):.1f} s "
          f"= {100 * share:.3f} % ({saved} checkpoints)")
    if saved:
        per = cost / saved
        print(f"per checkpoint: {1000 * per:.1f} ms = {100 * per / args.interval:.3f} % of "
              f"the {args.interval:g} s interval")
    print(f"checkpoint size, lecture MLP after {args.epochs} epochs: {size} bytes")
    print(f"checkpoint size, digits CNN after 2 epochs: {cnn_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
