"""The sweep's best trial on trials made up here: the best mean over seeds (not the best single
seed), its runner-up, and whether the gap is clear of the seeds' noise (Welch's t-test at 5 %,
never with a single seed); each trial's objective at its last or its best epoch."""

from __future__ import annotations

import math
import statistics

import pytest

from service.store.models import Job, JobStatus, Sweep
from service.sweeps.trials import (
    Trial,
    best_trial,
    clear_winner,
    job_objective,
    t_critical,
    trials_of,
)


def sweep(goal: str = "minimize", at: str | None = None) -> Sweep:
    objective = {"metric": "val_loss", "goal": goal} | ({"at": at} if at else {})
    return Sweep(id="s" * 32, spec={"objective": objective},
                 plan={"param_order": ["model.hidden_activation"], "configs": None})


def trial(number: int, values: list[float], state: str = "succeeded") -> Trial:
    return Trial(number=number, name=f"t{number}", params={"model.hidden_activation": number},
                 state=state, objective=statistics.fmean(values) if values else None,
                 objective_std=statistics.stdev(values) if len(values) > 1 else None,
                 objective_values=values, trained_by=None, jobs=[])


def test_the_best_is_the_best_mean_not_the_best_single_seed():
    lucky = trial(0, [1.0, 1.4])  # the lowest single value, mean 1.2
    steady = trial(1, [1.1, 1.15])  # mean 1.125
    best = best_trial(sweep(), [lucky, steady, trial(2, [0.1], state="running")])
    assert best["number"] == 1 and best["objective"] == pytest.approx(1.125)
    assert best["n_seeds"] == 2
    assert best["runner_up"] == {"number": 0, "name": "t0", "params": lucky.params,
                                 "objective": pytest.approx(1.2),
                                 "objective_std": pytest.approx(statistics.stdev([1.0, 1.4])),
                                 "n_seeds": 2}
    assert set(best) == {"number", "name", "params", "objective", "objective_std", "n_seeds",
                         "job_ids", "runner_up", "clear"}


def test_maximize_ranks_the_highest_mean_first():
    best = best_trial(sweep("maximize"), [trial(0, [0.8, 0.81, 0.82]),
                                          trial(1, [0.5, 0.51, 0.52])])
    assert best["number"] == 0 and best["runner_up"]["number"] == 1
    assert best["clear"] is True


def test_a_gap_far_beyond_the_seeds_spread_is_clear():
    best = best_trial(sweep(), [trial(0, [2.0, 2.01, 2.02]), trial(1, [1.0, 1.01, 1.02])])
    assert best["number"] == 1 and best["clear"] is True


def test_a_gap_within_welchs_interval_is_not_clear_though_it_beats_one_standard_error():
    # Each trial: sd 0.1414 over 2 seeds, so the difference's standard error is 0.1414 and
    # Welch's df is 2: t(0.975, 2) = 4.303, a threshold of 0.609. A gap of 0.3 is twice the
    # standard error, and still within noise.
    a, b = trial(0, [1.0, 1.2]), trial(1, [1.3, 1.5])
    se = math.sqrt(statistics.variance(a.objective_values) / 2
                   + statistics.variance(b.objective_values) / 2)
    assert b.objective - a.objective > 2 * se
    best = best_trial(sweep(), [a, b])
    assert best["number"] == 0 and best["clear"] is False
    # Three times further apart, it clears the threshold.
    assert best_trial(sweep(), [a, trial(1, [1.8, 2.0])])["clear"] is True


def test_a_single_seed_is_always_within_noise():
    best = best_trial(sweep(), [trial(0, [1.0]), trial(1, [5.0])])
    assert best["number"] == 0 and best["n_seeds"] == 1
    assert best["runner_up"]["objective_std"] is None and best["runner_up"]["n_seeds"] == 1
    assert best["clear"] is False
    # One side with seeds is not enough either: the other's spread is unmeasured.
    assert best_trial(sweep(), [trial(0, [1.0, 1.01]), trial(1, [5.0])])["clear"] is False


def test_a_tie_goes_to_the_lower_trial_number_and_is_never_clear():
    for goal in ("minimize", "maximize"):
        best = best_trial(sweep(goal), [trial(3, [1.0, 1.2]), trial(1, [1.2, 1.0]),
                                        trial(2, [0.0, 0.1] if goal == "maximize" else
                                              [3.0, 3.1])])
        assert (best["number"], best["runner_up"]["number"]) == (1, 3), goal
        assert best["clear"] is False
    # Seeds that agree exactly: equal means are a tie, different ones are clear.
    assert best_trial(sweep(), [trial(0, [1.0, 1.0]), trial(1, [1.0, 1.0])])["clear"] is False
    assert best_trial(sweep(), [trial(0, [1.0, 1.0]), trial(1, [2.0, 2.0])])["clear"] is True


def test_one_trial_has_no_runner_up_and_nothing_to_be_confused_with():
    best = best_trial(sweep(), [trial(0, [1.0]), trial(1, [], state="failed")])
    assert best["runner_up"] is None and best["clear"] is True
    assert best_trial(sweep(), [trial(0, [], state="failed")]) is None
    assert clear_winner(trial(0, [1.0]), None) is True


def test_t_critical_rounds_the_degrees_of_freedom_down():
    assert t_critical(1) == 12.706
    assert t_critical(2.9) == 4.303  # df 2, the stricter value
    assert t_critical(35) == 2.042  # df 30
    assert t_critical(0.5) == 12.706
    assert t_critical(5000) == 1.96


def _job(summary: dict, status=JobStatus.succeeded, number: int = 0, repeat: int = 0) -> Job:
    return Job(id=f"j{number}{repeat}", status=status, trial_number=number, repeat=repeat,
               trial_params={"model.hidden_activation": number}, spec={"fit": {"seed": repeat}},
               plan={"epochs": 4}, summary=summary)


def summary(last: float, best: float, metric: str = "val_loss") -> dict:
    return {"final_metrics": {"val_loss": last},
            "best_epoch": {"metric": metric, "goal": "minimize", "epoch": 2, "value": best}}


def test_a_jobs_objective_is_at_its_last_or_its_best_epoch():
    job = _job(summary(last=2.5, best=1.6))
    assert job_objective(job, "val_loss") == 2.5
    assert job_objective(job, "val_loss", "last") == 2.5
    assert job_objective(job, "val_loss", "best") == 1.6
    # A best epoch judged by another metric, or none recorded: the last value.
    assert job_objective(_job(summary(2.5, 0.9, metric="val_accuracy")), "val_loss",
                         "best") == 2.5
    assert job_objective(_job({"final_metrics": {"val_loss": 2.5}}), "val_loss", "best") == 2.5
    assert job_objective(_job(summary(2.5, 1.6), status=JobStatus.failed), "val_loss",
                         "best") is None


@pytest.mark.parametrize("at,expect", [(None, (2.5, 2.0)), ("last", (2.5, 2.0)),
                                       ("best", (1.0, 1.5))])
def test_trials_follow_the_sweeps_objective_at(at, expect):
    """A trial that overfits (best 1.0, last 2.5) against one that does not (1.5, 2.0): at its
    last epoch the second wins, at its best the first. A sweep stored before ``at`` existed
    reads its last epoch."""
    jobs = [_job(summary(2.5, 1.0), number=0, repeat=r) for r in (0, 1)] + \
        [_job(summary(2.0, 1.5), number=1, repeat=r) for r in (0, 1)]
    sw = sweep(at=at)
    trials = trials_of(sw, jobs)
    assert [t.objective for t in trials] == list(expect)
    assert [t.objective_values for t in trials] == [[expect[0]] * 2, [expect[1]] * 2]
    assert all(j.objective == t.objective for t in trials for j in t.jobs)
    best = best_trial(sw, trials)
    assert best["number"] == (0 if at == "best" else 1)
    assert best["clear"] is True  # identical seeds, different means


def test_show_says_the_best_its_runner_up_and_the_noise_in_one_sentence():
    from kerasyard.cli import format as fmt

    best = best_trial(sweep(), [trial(0, [1.0, 1.2]), trial(1, [1.3, 1.5])])
    best["name"], best["runner_up"]["name"] = "act=relu", "act=tanh"
    line = fmt.best_line({"objective": {"metric": "val_loss"}, "best": best})
    assert line == ("best: trial 0 (act=relu)  val_loss 1.100 ± 0.1414 over 2 seeds; runner-up "
                    "trial 1 (act=tanh) 1.400 ± 0.1414 over 2 seeds; within noise: add repeats")
    best["clear"] = True
    assert fmt.best_line({"objective": {"metric": "val_loss"}, "best": best}).endswith(
        "over 2 seeds; the best is clearly better (Welch's t-test, 5 %)")
    alone = best_trial(sweep(), [trial(0, [1.0])])
    assert fmt.best_line({"objective": {"metric": "val_loss"}, "best": alone}) == \
        "best: trial 0 (t0)  val_loss 1.000 over 1 seed"


def test_show_names_the_registered_winner_or_why_there_is_none():
    from rich.console import Console

    from kerasyard.cli import format as fmt

    def shown(report):
        console = Console(width=200, record=True)
        console.print(fmt.sweep_details({"id": "s" * 32, "name": "lecture", "status":
                                         "succeeded", "report": report, "trials": []}))
        return console.export_text()

    url = "http://mlflow.local/#/models/lecture/versions/3?mode"
    out = shown({"registered_model": {"name": "lecture", "version": "3", "alias": "best",
                                      "url": url}})
    line = next(x for x in out.splitlines() if x.lstrip().startswith("best model"))
    assert "models:/lecture@best (version 3)" in line and url in line, out
    out = shown({"registered_model": None, "no_model_registered": "KERASYARD_LOG_MODEL is off"})
    assert "none registered: KERASYARD_LOG_MODEL is off" in out
    assert "best model" not in shown(None)


def test_job_listings_keep_sweep_trials_apart(tmp_path):
    """``GET /jobs?standalone=true`` lists the jobs submitted on their own, ``false`` the
    sweeps' trials; filters combine; a value that is not true or false is a 400 naming the
    field (SQLite, nothing trained)."""
    from sqlalchemy import update

    from service.store.db import session_scope
    from tests.helpers import sqlite_api_client, tiny_spec

    client = sqlite_api_client(tmp_path)
    own, trial_id = (client.post("/api/v1/jobs", json=tiny_spec(name=n)).get_json()["id"]
                     for n in ("own", "trial"))
    with session_scope(f"sqlite:///{tmp_path / 'k.db'}") as s:
        s.execute(update(Job).where(Job.id == trial_id).values(sweep_id="f" * 32))

    def ids(query: str) -> list[str]:
        answer = client.get(f"/api/v1/jobs{query}")
        assert answer.status_code == 200, answer.get_json()
        return [j["id"] for j in answer.get_json()["jobs"]]

    assert ids("?standalone=true") == [own]
    assert ids("?standalone=false") == [trial_id]
    assert sorted(ids("")) == sorted([own, trial_id])
    assert ids("?standalone=false&status=queued") == [trial_id]
    answer = client.get("/api/v1/jobs?standalone=yes")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "bad_request" and error["details"] == [
        {"loc": "standalone", "msg": "true or false", "value": "yes"}], error
    assert client.get("/api/v1/jobs?standalone=1").get_json()["error"]["message"] == \
        "standalone='1' must be true or false"


@pytest.mark.parametrize("at,reported", [("last", [2.0, 1.5, 3.0]), ("best", [2.0, 1.5, 1.5])])
def test_the_pruner_hears_the_value_the_trial_would_score_at_each_epoch(tmp_path, at, reported):
    """At "best", each epoch reports the best value so far: what the trial would score if it
    ended there (Optuna in a SQLite database, as the service keeps it)."""
    import dataclasses

    import optuna

    from service.config import Settings
    from service.migrate import upgrade
    from service.sweeps import studies
    from service.sweeps.hooks import TrialContext, pruner

    url = f"sqlite:///{tmp_path / 'k.db'}"
    upgrade(url)
    spec = {"objective": {"metric": "val_loss", "goal": "minimize", "at": at},
            "early_stopping": {"type": "median", "n_startup_trials": 5}, "method": "grid",
            "seed": 0, "max_trials": None}
    studies.create_study(url, "s", spec)
    trial = studies.load_study(url, "s", spec).ask()
    ctx = TrialContext(sweep_id="s" * 32, sweep_name="s", study_name="s", sweep_spec=spec,
                       number=0, repeat=0, params={}, optuna_trial_id=trial._trial_id,
                       shared=[])
    report = pruner(dataclasses.replace(Settings.from_env(), database_url=url), ctx)
    assert report([(1, {"val_loss": 2.0}), (2, {"val_loss": 1.5})]) is False
    assert report([(3, {"val_loss": 3.0})]) is False  # a later flush keeps the best so far
    study = optuna.load_study(study_name="s", storage=studies.storage(url))
    assert study.trials[0].intermediate_values == dict(zip((1, 2, 3), reported))
    studies.dispose_storages()
