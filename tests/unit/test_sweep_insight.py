"""The sweep report's analysis and page, from trials made up here (no training): the overview
grid, seed-only error bars, importance, the curves on three clocks, the self-contained page.
(The words, the figures' styling and the importance decomposition: test_sweep_report_parts.)"""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest

from service.store.models import Job, JobStatus
from service.worker_api import Trial, TrialJob
from worker.sweeps.report import curves as C
from worker.sweeps.report import figures as sweep_figures
from worker.sweeps.report import html as report_html
from worker.sweeps.report import insight as I
from worker.sweeps.report import words as W
from worker.sweeps.report.importance import importance

BATCHES = [1, 5, 40, 200]
CHANCE = W.Chance(math.log(10), "chance: ln(10) = 2.303, uniform guess over 10 classes")
ACTS = ["sigmoid", "relu", "tanh"]
EPOCHS = [10, 50]
PARAMS = ["fit.batch_size", "model.hidden_activation", "fit.epochs"]


def objective(bs, act, ep, seed=0):
    # Batch size matters most, activation a little, epochs a little; seeds barely.
    return 1.0 + math.log10(bs) + {"sigmoid": 0.3, "relu": 0.0, "tanh": 0.1}[act] \
        - ep / 500 + 0.01 * seed


def lecture(seeds: int = 1):
    trials, jobs, curves = [], [], {}
    for n, (bs, act, ep) in enumerate(itertools.product(BATCHES, ACTS, EPOCHS)):
        tjobs, values = [], []
        for seed in range(seeds):
            jid = f"j{n}s{seed}"
            value = objective(bs, act, ep, seed)
            values.append(value)
            job = Job(id=jid, status=JobStatus.succeeded, trial_number=n, repeat=seed,
                      plan={"steps_per_epoch": math.ceil(200 / bs), "n_val": 50,
                            "n_classes": 10},
                      summary={"fit_time_s": 0.01 * ep * 200 / bs,
                               "chance": {"loss": math.log(10), "accuracy": 0.1}},
                      mlflow_run_id=f"r{jid}",
                      mlflow_experiment_id="1")
            jobs.append(job)
            curves[jid] = [{"val_loss": value + (ep - e) / 100, "epoch_time_s": 0.01 * 200 / bs}
                           for e in range(1, ep + 1)]
            tjobs.append(TrialJob(jid, "succeeded", seed, seed, ep, ep, value, None, f"r{jid}"))
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 \
            if len(values) > 1 else None
        trials.append(Trial(n, f"bs={bs} act={act} ep={ep}",
                            {"fit.batch_size": bs, "model.hidden_activation": act,
                             "fit.epochs": ep}, "succeeded", mean, sd, values, None, tjobs))
    return trials, jobs, curves


def test_overview_is_the_batch_by_activation_grid_at_the_largest_epochs():
    trials, _, _ = lecture()
    grids = I.pair_grids(trials, PARAMS)
    first = grids[0]
    assert (first.rows, first.cols) == ("fit.batch_size", "model.hidden_activation")
    assert first.row_values == BATCHES and first.col_values == ACTS
    assert first.fixed == {"fit.epochs": 50}
    for r, bs in enumerate(BATCHES):
        for c, act in enumerate(ACTS):
            assert first.values[r][c] == pytest.approx(objective(bs, act, 50))
    assert {(g.rows, g.cols) for g in grids[1:]} == {("fit.batch_size", "fit.epochs"),
                                                     ("model.hidden_activation", "fit.epochs")}


def test_error_bars_are_seed_spread_only():
    trials, _, _ = lecture(seeds=1)
    effects = {e.param: e for e in I.factor_effects(trials, PARAMS)}
    bs = effects["fit.batch_size"]
    assert bs.log and bs.numeric and bs.fixed == {"fit.epochs": 50}
    assert len(bs.series) == 3  # one per activation, never averaged over them
    assert all(sd is None for s in bs.series for sd in s.sd)
    assert not effects["model.hidden_activation"].numeric
    trials, _, _ = lecture(seeds=3)
    bs = {e.param: e for e in I.factor_effects(trials, PARAMS)}["fit.batch_size"]
    assert all(sd == pytest.approx(0.01) for s in bs.series for sd in s.sd)


def test_importance_ranks_batch_size_first_on_a_full_grid():
    trials, _, _ = lecture()
    imp = importance(trials, PARAMS)
    assert list(imp.main) == ["fit.batch_size", "model.hidden_activation", "fit.epochs"]
    # objective() is additive: main effects explain it all, nothing is left to interactions.
    assert sum(imp.main.values()) == pytest.approx(1.0)
    assert imp.interactions == pytest.approx(0.0, abs=1e-9)
    assert imp.method == "ANOVA over the grid"


def test_importance_of_an_incomplete_grid_goes_to_fanova():
    trials, _, _ = lecture()
    imp = importance(trials[:-3], PARAMS)
    assert imp.method.startswith("Optuna fANOVA")
    assert next(iter(imp.main)) == "fit.batch_size"
    assert sum(imp.main.values()) + imp.interactions == pytest.approx(1.0)


def test_curves_one_line_per_batch_size_shorter_trials_marked():
    trials, jobs, curves = lecture()
    line_by, panels = C.curve_panels(trials, jobs, PARAMS, curves, "val_loss")
    assert line_by == "fit.batch_size"
    assert [p.fixed for p in panels] == [{"model.hidden_activation": a} for a in ACTS]
    for p in panels:
        assert [c.label for c in p.curves] == ["1", "5", "40", "200"]
        for c in p.curves:
            assert len(c.epochs) == 50 and [m[0] for m in c.marks] == [10]
    bs5 = panels[0].curves[1]
    assert bs5.updates[0] == 40 and bs5.updates[-1] == 50 * 40


def test_page_is_self_contained_and_carries_its_data(tmp_path):
    trials, jobs, curves = lecture()
    imp = importance(trials, PARAMS)
    grids = I.pair_grids(trials, PARAMS)
    line_by, panels = C.curve_panels(trials, jobs, PARAMS, curves, "val_loss")
    figures = {
        "overview": sweep_figures.overview(grids, "val_loss", "minimize", CHANCE,
                                           tmp_path / "o.png"),
        "importance": sweep_figures.importance(imp, "val_loss", tmp_path / "i.png"),
        "factors": sweep_figures.factor_effects(I.factor_effects(trials, PARAMS), "val_loss",
                                                "minimize", CHANCE, tmp_path / "f.png"),
        "curves": sweep_figures.clocks(panels, line_by, "val_loss", "minimize", CHANCE,
                                       tmp_path / "c.png")}
    data = {"overview": [g.as_dict() for g in grids], "importance": imp.as_dict()}
    rows = [{"number": t.number, "name": t.name, "params": t.params, "state": t.state,
             "objective": t.objective, "sd": None, "seeds": 1, "epochs": 10, "updates": 10,
             "fit_s": 1.0, "best": t.number == 0, "links": [("run", "http://x/#/r?a=1")]}
            for t in trials]
    page = report_html.render(title="Sweep </script>", lede="l", data=data, figures=figures,
                              trials_rows=rows, params=PARAMS, metric="val_loss",
                              goal="minimize", notes=[])
    (tmp_path / "report.html").write_text(page)
    assert not re.search(r"(src|href)=['\"](?!data:|http://x/)", page)  # nothing to fetch
    assert page.count("data:image/png;base64,") == 4
    block = re.search(r"id='kerasyard-report'>(.*?)</script>", page, re.S).group(1)
    assert json.loads(block)["overview"][0]["col_values"] == ACTS
    assert "Sweep &lt;/script&gt;" in page


def _settings(tmp_path):
    from service.config import Settings

    return Settings(data_dir=tmp_path, database_url="sqlite://", broker_url="memory://",
                    mlflow_tracking_uri="http://mlflow", mlflow_ui_url="http://ui")


def _report_of(tmp_path, trials, jobs, curves, params, metric="val_loss", goal="minimize",
               best=None):
    from service.store.models import Sweep, SweepStatus
    from worker.sweeps.report import write as sweep_report

    sweep = Sweep(id="s1", name="edge", experiment="e", status=SweepStatus.succeeded,
                  method="grid", spec={"objective": {"metric": metric, "goal": goal}},
                  plan={"param_order": params}, study_name="x")
    sweep_report._report(_settings(tmp_path), sweep, jobs, trials, best, curves,
                         importance(trials, params), tmp_path, "1", "run")
    page = (tmp_path / "report.html").read_text()
    return json.loads(re.search(r"id='kerasyard-report'>(.*?)</script>", page, re.S).group(1))


def test_report_of_one_factor_regression_sweep_with_a_failed_trial(tmp_path):
    trials, jobs, curves = [], [], {}
    for n, lr in enumerate([0.001, 0.01, 0.1]):
        ok = lr != 0.1
        jid = f"j{n}"
        jobs.append(Job(id=jid, status=JobStatus.succeeded if ok else JobStatus.failed,
                        trial_number=n, repeat=0, plan={"steps_per_epoch": 4, "n_val": 0},
                        summary={}, mlflow_run_id=f"r{n}", mlflow_experiment_id="1"))
        curves[jid] = [{"val_loss": 1.0 / (e * lr * 100)} for e in range(1, 4)] if ok else []
        trials.append(Trial(n, f"lr={lr}", {"compile.optimizer.learning_rate": lr},
                            "succeeded" if ok else "failed", 1 / (3 * lr * 100) if ok else None,
                            None, [1 / (3 * lr * 100)] if ok else [], None,
                            [TrialJob(jid, "succeeded", 0, 0, 3, 3, None, None, f"r{n}")]))
    data = _report_of(tmp_path, trials, jobs, curves, ["compile.optimizer.learning_rate"])
    assert data["overview"] == [] and data["chance"] is None  # one factor: no pair; regression
    assert data["figures"] == ["curves", "factors", "importance"]
    assert data["curves"]["panels"][0]["lines"] == ["0.001", "0.01"]  # the failed trial: none


def test_report_of_a_sampled_sweep_uses_fanova(tmp_path):
    import random

    rng = random.Random(0)
    trials, jobs, curves = [], [], {}
    for n in range(12):
        lr, units = 10 ** rng.uniform(-4, -1), rng.choice([8, 16, 32])
        value = abs(math.log10(lr) + 2.5) + units / 100
        jid = f"j{n}"
        jobs.append(Job(id=jid, status=JobStatus.succeeded, trial_number=n, repeat=0,
                        plan={"steps_per_epoch": 4, "n_val": 8}, summary={},
                        mlflow_run_id=f"r{n}", mlflow_experiment_id="1"))
        curves[jid] = [{"val_loss": value + 1 / e} for e in range(1, 4)]
        trials.append(Trial(n, f"t{n}", {"compile.optimizer.learning_rate": lr,
                                         "model.layers.0.units": units}, "succeeded", value,
                            None, [value], None,
                            [TrialJob(jid, "succeeded", 0, 0, 3, 3, value, None, f"r{n}")]))
    params = ["compile.optimizer.learning_rate", "model.layers.0.units"]
    data = _report_of(tmp_path, trials, jobs, curves, params)
    assert data["importance"]["method"].startswith("Optuna fANOVA")
    assert data["importance"]["main"][0][0] == "compile.optimizer.learning_rate"
    # 12 sampled learning rates are no grid axis: no overview table; one panel of the best
    # 10 trials' curves.
    assert data["overview"] == []
    assert data["figures"] == ["curves", "factors", "importance"]
    assert data["curves"]["line_by"] is None
    assert [len(p["lines"]) for p in data["curves"]["panels"]] == [10]
