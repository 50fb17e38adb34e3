"""How much of the backlog MLflow gets per call: its calls may fill 1% of the wall clock."""

from __future__ import annotations

import dataclasses
import time

from service.config import Settings
from service.worker_api import Fence
from worker.recording.reporter import Reporter, Signals


def reporter(**overrides) -> Reporter:
    settings = dataclasses.replace(Settings.from_env(), mlflow_flush_interval_s=1.0,
                                   mlflow_max_duty=0.01, **overrides)
    rep = Reporter(settings, Fence("job", 1), 1000, Signals())
    rep.mlflow = object()  # only its presence matters to the share
    return rep


def epochs(n: int, start: int = 1) -> list[tuple[int, dict]]:
    return [(e, {"loss": 1.0, "accuracy": 0.5, "learning_rate": 0.01, "epoch_time_s": 0.01})
            for e in range(start, start + n)]


def test_slow_epochs_all_go_every_second():
    rep = reporter()
    rep._pending_mlflow = epochs(2)
    rep._last_mlflow = time.monotonic() - 1.1
    assert [e for e, _ in rep._mlflow_share(final=False)] == [1, 2]
    assert rep._pending_mlflow == []


def test_nothing_goes_before_the_interval():
    rep = reporter()
    rep._pending_mlflow = epochs(3)
    rep._last_mlflow = time.monotonic() - 0.5
    assert rep._mlflow_share(final=False) == []
    assert len(rep._pending_mlflow) == 3


def test_fast_epochs_are_capped_to_the_budget_oldest_first():
    rep = reporter()
    rep._pending_mlflow = epochs(1000)
    rep._cost_per_value = 1e-4  # 0.1 ms per value
    rep._last_mlflow = time.monotonic() - 1.0
    share = rep._mlflow_share(final=False)
    # 1% of ~1 s at 0.1 ms per value is ~100 values: 25 epochs of 4 values.
    assert 24 <= len(share) <= 26
    assert share[0][0] == 1 and rep._pending_mlflow[0][0] == share[-1][0] + 1
    assert len(share) + len(rep._pending_mlflow) == 1000


def test_at_least_one_epoch_and_everything_at_the_end():
    rep = reporter()
    rep._pending_mlflow = epochs(10)
    rep._cost_per_value = 10.0  # a very slow server
    rep._last_mlflow = time.monotonic() - 1.0
    assert len(rep._mlflow_share(final=False)) == 1
    assert len(rep._mlflow_share(final=True)) == 9
