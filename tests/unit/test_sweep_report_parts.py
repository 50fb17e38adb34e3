"""The sweep report's decisions, each from data made up here (no training): the importance
decomposition against a hand-computed two-factor example, the headline's sentence, chance
labelled with how it is computed, each curve's best epoch and whether training longer made it
worse, and the figures' ordering and styling (legend order, series told apart, legends outside
the axes, one colour scale with chance on it)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from service.store.models import Job, JobStatus
from service.worker_api import Trial, TrialJob
from worker.sweeps.report import curves as C
from worker.sweeps.report import figures as F
from worker.sweeps.report import insight as I
from worker.sweeps.report import words as W
from worker.sweeps.report.importance import grid_anova, importance

BS, ACT, EP = "fit.batch_size", "model.hidden_activation", "fit.epochs"


def trial(n, params, values, jobs=None):
    mean = sum(values) / len(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Trial(n, " ".join(f"{k}={v}" for k, v in params.items()), params, "succeeded", mean,
                 sd, list(values), None,
                 jobs or [TrialJob(f"j{n}s{s}", "succeeded", s, s, 1, 1, v, None, None)
                          for s, v in enumerate(values)])


# --- importance --------------------------------------------------------------------------------


def test_two_factor_decomposition_matches_the_hand_computation():
    """y = [[1, 3], [2, 8]] over A (rows) x B (columns). Grand mean 3.5. A's level means 2 and
    5: SS_A = 4 x 1.5² = 9. B's level means 1.5 and 5.5: SS_B = 4 x 2² = 16. Total
    SS = 2.5² + 0.5² + 1.5² + 4.5² = 29, so the interaction is 29 - 9 - 16 = 4: shares 9/29,
    16/29 and 4/29."""
    trials = [trial(n, {"a": a, "b": b}, [y]) for n, ((a, b), y) in enumerate(
        zip(itertools.product([0, 1], ["x", "z"]), [1.0, 3.0, 2.0, 8.0]))]
    imp = importance(trials, ["a", "b"])
    assert imp.method == "ANOVA over the grid"
    assert list(imp.main) == ["b", "a"]  # largest first
    assert imp.main["a"] == pytest.approx(9 / 29)
    assert imp.main["b"] == pytest.approx(16 / 29)
    assert imp.interactions == pytest.approx(4 / 29)
    assert imp.pairs == {("a", "b"): pytest.approx(4 / 29)}
    assert imp.higher is None  # two factors: the pair is all the interaction there is
    assert imp.metrics() == {"importance.a": pytest.approx(9 / 29),
                             "importance.b": pytest.approx(16 / 29),
                             "importance.interactions": pytest.approx(4 / 29)}


def test_a_pure_interaction_has_no_main_effect():
    # XOR: each factor alone changes nothing on average; together they decide everything.
    imp = grid_anova([(0, 0), (0, 1), (1, 0), (1, 1)], [0.0, 1.0, 1.0, 0.0], ["a", "b"])
    assert imp.main == {"a": pytest.approx(0.0), "b": pytest.approx(0.0)}
    assert imp.interactions == pytest.approx(1.0)


def test_three_factors_add_up_with_pairs_and_the_three_way_rest():
    rng = np.random.default_rng(0)
    keys = list(itertools.product(range(3), range(2), range(4)))
    y = [a + 2 * b * c + rng.normal(0, 0.3) for a, b, c in keys]
    imp = grid_anova(keys, y, ["a", "b", "c"])
    assert sum(imp.main.values()) + imp.interactions == pytest.approx(1.0)
    assert sum(imp.pairs.values()) + imp.higher == pytest.approx(imp.interactions)
    assert next(iter(imp.pairs)) == ("b", "c")  # the b x c product is the big interaction
    assert imp.pairs[("b", "c")] > 0.1 > imp.pairs[("a", "b")]


# --- the headline ------------------------------------------------------------------------------


BEST = {"number": 4, "name": "bs=5 act=tanh ep=50", "objective": 1.5081, "objective_std": 0.021,
        "params": {BS: 5, ACT: "tanh", EP: 50}, "job_ids": ["a", "b", "c"], "n_seeds": 3,
        "runner_up": {"name": "bs=1 act=tanh ep=10", "objective": 1.519,
                      "objective_std": 0.03, "params": {BS: 1, ACT: "tanh", EP: 10}},
        "clear": False}


def test_headline_says_mean_sd_over_seeds_and_within_noise():
    h = W.headline(BEST, "val_loss")
    assert h["text"] == ("Best: bs=5 act=tanh ep=50, val_loss at the last epoch 1.508 ± 0.021 "
                         "(mean ± sd over 3 seeds); runner-up bs=1 act=tanh ep=10, 1.519 ± "
                         "0.03: within noise: add repeats.")
    clear = W.headline({**BEST, "clear": True}, "val_loss", at="best")
    assert "within noise" not in clear["text"]
    assert clear["text"].startswith("Best: bs=5 act=tanh ep=50, val_loss at its best epoch ")
    assert clear["text"].endswith(": ahead by more than the noise.")


def test_headline_of_a_best_without_the_noise_keys_makes_no_noise_claim():
    old = {k: v for k, v in BEST.items() if k not in ("n_seeds", "runner_up", "clear")}
    old.update(objective_std=None, job_ids=["a"])
    h = W.headline(old, "val_loss")
    assert h["text"] == ("Best: bs=5 act=tanh ep=50, val_loss at the last epoch 1.508 (one "
                         "seed, so no spread measured).")
    assert W.headline(None, "val_loss")["name"] is None


def test_every_heatmap_marks_the_headline_configuration():
    trials = [trial(n, {BS: bs, ACT: act, EP: ep},
                    [1 + bs / 100 + (act == "relu") * 0.1 - ep / 1000 + s / 100
                     for s in range(3)])
              for n, (bs, act, ep) in enumerate(itertools.product([1, 5, 40], ["relu", "tanh"],
                                                                  [10, 50, 200]))]
    best = {"params": {BS: 5, ACT: "tanh", EP: 50}}
    grids = I.pair_grids(trials, [BS, ACT, EP], best)
    assert [(g.rows, g.cols) for g in grids] == [(BS, ACT), (BS, EP), (ACT, EP)]
    first = grids[0]
    assert first.fixed == {EP: 50}  # the best trial's epochs, not the largest
    assert first.best_cell == [1, 1]
    mine = next(t for t in trials if t.params == best["params"])
    assert first.values[1][1] == pytest.approx(mine.objective)
    assert grids[1].best_cell == [1, 1] and grids[2].best_cell == [1, 1]
    assert I.grid_title(first.as_dict(), "val_loss") == (
        "val_loss: bs × act at ep=50; each cell: one configuration, mean over 3 seeds")
    assert I.grid_title(grids[1].as_dict(), "val_loss") == (
        "val_loss: bs × ep; each cell: mean over act and 3 seeds")


# --- chance ------------------------------------------------------------------------------------


def test_chance_is_labelled_with_how_it_is_computed():
    jobs = [Job(id="j", status=JobStatus.succeeded, plan={"n_classes": 10},
                summary={"chance": {"loss": math.log(10), "accuracy": 0.22}})]
    loss = W.chance_of(jobs, "val_loss")
    assert loss.value == pytest.approx(math.log(10))
    assert loss.label == "chance: ln(10) = 2.303, uniform guess over 10 classes"
    acc = W.chance_of(jobs, "val_accuracy")
    assert acc.value == pytest.approx(0.1)
    assert acc.label == "chance: 1/10 = 0.100, uniform guess over 10 classes"
    assert acc.majority == pytest.approx(0.22)
    assert acc.majority_label == ("majority class: 0.220, always answering the validation "
                                  "set's most common class")
    balanced = [Job(id="j", status=JobStatus.succeeded, plan={"n_classes": 2},
                    summary={"chance": {"loss": math.log(2), "accuracy": 0.5}})]
    assert W.chance_of(balanced, "accuracy").majority is None  # no second line when equal
    assert W.chance_of(jobs, "val_mae") is None
    assert W.chance_of([Job(id="r", status=JobStatus.succeeded, summary={})], "val_loss") is None


# --- best epoch and training too long ------------------------------------------------------------


def _curve_of(per_seed: list[list[float]], bs: int = 5):
    jobs, curves, tjobs = [], {}, []
    for s, ys in enumerate(per_seed):
        jid = f"c{s}"
        jobs.append(Job(id=jid, status=JobStatus.succeeded, plan={"steps_per_epoch": 200 // bs},
                        summary={}))
        curves[jid] = [{"val_loss": y, "epoch_time_s": 0.1} for y in ys]
        tjobs.append(TrialJob(jid, "succeeded", s, s, len(ys), len(ys), ys[-1], None, None))
    t = trial(0, {BS: bs}, [ys[-1] for ys in per_seed], tjobs)
    return C._curve(t, {j.id: j for j in jobs}, curves, "val_loss", "minimize")


def test_a_u_shaped_curve_marks_its_best_epoch_and_says_it_got_worse():
    epochs = np.arange(1, 41)
    shape = 1.5 + 0.002 * (epochs - 12) ** 2  # lowest at epoch 12, 3.068 at epoch 40
    c = _curve_of([list(shape + d) for d in (-0.01, 0.0, 0.01)])
    assert c.best_epoch == 12 and c.best_value == pytest.approx(1.5)
    assert c.noise == pytest.approx(0.01) and c.worse is True
    panel = C.CurvePanel({ACT: "relu"}, [c])
    c.label = "5"
    chance = W.Chance(math.log(10), "chance: ln(10) = 2.303, uniform guess over 10 classes")
    text = W.overtraining([panel], BS, "val_loss", chance, "minimize")["text"]
    assert "Training longer made 1 of the 1 curves worse" in text
    assert "bs=5 act=relu: best 1.5 at epoch 12, 3.068 at epoch 40, worse than chance " \
           "(2.303)" in text


def test_a_curve_still_improving_is_not_called_worse_and_one_short_seed_is_not_judged():
    falling = [list(2.0 - 0.01 * np.arange(40) + d) for d in (0.0, 0.02)]
    c = _curve_of(falling)
    assert c.best_epoch == 40 and c.worse is False
    short = _curve_of([[2.0, 1.8, 1.9]])  # one seed, 3 epochs: no noise to judge by
    assert short.best_epoch == 2 and short.noise is None and short.worse is None
    short.label = "5"
    text = W.overtraining([C.CurvePanel({}, [short])], BS, "val_loss", None, "minimize")["text"]
    assert "not judged" in text


def test_the_per_update_panel_says_its_lesson_in_words():
    fast = _curve_of([[2.0 - 0.01 * e for e in range(10)]], bs=5)  # 40 updates an epoch
    slow = _curve_of([[2.0 - 0.3 * e for e in range(2)] * 5], bs=40)  # 5 updates an epoch
    fast.label, slow.label = "5", "40"
    text = W.update_lesson([C.CurvePanel({}, [fast, slow])], BS, "val_loss", "minimize")
    assert text.startswith("x: updates, the weight steps taken (epochs × steps per epoch: "
                           "bs=5: 40 an epoch, bs=40: 5 an epoch); y: val_loss")
    assert "After 50 updates (the most every line reached)" in text
    # Lines that are not batch sizes take as many updates an epoch: no batch-size lesson.
    relu, tanh = (_curve_of([[2.0 - 0.01 * e for e in range(4)]], bs=40) for _ in range(2))
    relu.label, tanh.label = "relu", "tanh"
    text = W.update_lesson([C.CurvePanel({}, [relu, tanh])], ACT, "val_loss", "minimize")
    assert "(epochs × steps per epoch: 5 an epoch for every line)" in text
    assert "small batch" not in text


# --- the figures -------------------------------------------------------------------------------


def _grid_trials():
    return [trial(n, {BS: bs, ACT: act, EP: ep}, [bs / 100 + len(act) / 10 + ep / 1000])
            for n, (bs, act, ep) in enumerate(itertools.product(
                [1, 5, 40, 200], ["sigmoid", "relu", "tanh"], [10, 50, 200]))]


def test_legends_are_in_numeric_order():
    effects = {e.param: e for e in I.factor_effects(_grid_trials(), [BS, ACT, EP])}
    act = effects[ACT]
    assert [s.label for s in act.series] == ["bs=1", "bs=5", "bs=40", "bs=200"]
    ep = effects[EP]
    assert [s.label for s in ep.series][:4] == ["bs=1 act=sigmoid", "bs=1 act=relu",
                                                "bs=1 act=tanh", "bs=5 act=sigmoid"]
    fig = F.build_factor_effects(list(effects.values()), "val_loss", "minimize", None)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["bs=1", "bs=5", "bs=40", "bs=200"]


def test_every_series_is_told_apart_beyond_the_palette():
    looks = F.series_styles(list(itertools.product(range(4), range(3))))
    assert len({(s["color"], s["ls"], s["marker"]) for s in looks}) == 12
    for a, b in itertools.combinations(looks, 2):
        if a["color"] == b["color"]:
            assert a["ls"] != b["ls"] and a["marker"] != b["marker"]
    flat = F.series_styles([(i,) for i in range(14)])  # more than the 10 colours
    assert len({(s["color"], s["ls"], s["marker"]) for s in flat}) == 14
    # Drawn: the epochs panel's 12 series (4 batch sizes x 3 activations) all look different.
    effects = I.factor_effects(_grid_trials(), [BS, ACT, EP])
    fig = F.build_factor_effects(effects, "val_loss", "minimize", None)
    lines = [bars.lines[0] for bars in fig.axes[2].containers
             if bars.get_label().startswith("bs=")]
    drawn = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines}
    assert len(lines) == 12 and len(drawn) == 12


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_legends_sit_outside_the_axes():
    trials = _grid_trials()
    effects = I.factor_effects(trials, [BS, ACT, EP])
    fig = F.build_factor_effects(effects, "val_loss", "minimize", None)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_legend().get_window_extent(renderer)
        assert not any(_overlaps(box, other.get_window_extent(renderer)) for other in fig.axes)
    c = _curve_of([[2.0 - 0.01 * e for e in range(10)]])
    c.label = "5"
    fig = F.build_clocks([C.CurvePanel({ACT: "relu"}, [c])], BS, "val_loss", "minimize", None)
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent(renderer=fig.canvas.get_renderer())
    assert not any(_overlaps(box, ax.get_window_extent()) for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["bs=5", "best epoch"]


def test_heatmaps_share_one_colour_scale_with_chance_on_it():
    trials = _grid_trials()
    chance = W.Chance(1.5, "chance: ln(10) = 2.303, uniform guess over 10 classes")
    grids = I.pair_grids(trials, [BS, ACT, EP], {"params": {BS: 1, ACT: "tanh", EP: 10}})
    fig = F.build_overview(grids, "val_loss", "minimize", chance)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3 and len({im.get_clim() for im in images}) == 1
    values = [v for g in grids for row in g.values for v in row]
    assert images[0].get_clim() == pytest.approx((min(values), max(values)))
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    assert "chance 1.5" in [t.get_text() for t in bars[0].get_yticklabels()]
    starred = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().startswith("★")]
    assert len(starred) == 3  # the best configuration's cell, in every grid


# --- the winner handed over --------------------------------------------------------------------


def test_registered_name_and_model_page():
    from worker.sweeps.report import registry

    assert registry.registered_name("lecture: batch size x activation x epochs") == \
        "lecture - batch size x activation x epochs"
    assert registry.registered_name("a/b") == "a - b"
    assert registry.registered_name("..") == "sweep .."
    assert registry.model_url("http://ui/", "a - b", 3) == \
        "http://ui/#/models/a%20-%20b/versions/3?workflowType=machine_learning"


def test_a_sweep_without_a_model_says_why_nothing_was_registered(tmp_path):
    """No best trial, or trials that logged no model: no client call, and the reason is what
    the report and the parent run say."""
    import dataclasses

    from service.config import Settings
    from service.store.models import Sweep, SweepStatus
    from worker.sweeps.report import registry
    from worker.sweeps.report import write as sweep_report

    settings = Settings(data_dir=tmp_path, database_url="sqlite://", broker_url="memory://",
                        mlflow_tracking_uri="http://mlflow", mlflow_ui_url="http://ui")
    sweep = Sweep(id="s1", name="edge", status=SweepStatus.succeeded, spec={})
    assert registry.register_best(None, settings, sweep, [], None) == (
        None, "no trial finished with an objective, so there is no best model")
    off = dataclasses.replace(settings, log_model=False)
    registered, why = registry.register_best(None, off, sweep, [], BEST)
    assert registered is None and "KERASYARD_LOG_MODEL is off" in why
    handed = {"registered_model": None, "no_model_registered": why}
    assert sweep_report._model_html(handed) == f"No model registered: {why}."
    _, _, tags = sweep_report._run_fields(sweep, [], [], None, importance([], []), handed)
    assert tags["kerasyard.no_model_registered"] == why
