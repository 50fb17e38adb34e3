"""What every run logs beyond its epochs (worker/recording/outcome.py, tracking.run_params):
the best epoch by the monitored metric, a trial's share of the fit time, the single-value
metrics, and each spec field as one MLflow param; and how ``kerasyard show`` labels them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kerasyard.cli import format as fmt
from service.jobspec import validate_job
from tests.helpers import ROOT
from worker.recording import outcome
from worker.recording.tracking import PLAN_SPEC_FIELDS, run_params

HISTORY = [{"loss": 1.0, "val_loss": 1.5, "val_accuracy": 0.3, "epoch_time_s": 0.2},
           {"loss": 0.5, "val_loss": 1.2, "val_accuracy": 0.6, "epoch_time_s": 0.2},
           {"loss": 0.2, "val_loss": 1.2, "val_accuracy": 0.6, "epoch_time_s": 0.4},
           {"loss": 0.1, "val_loss": 1.9, "val_accuracy": 0.5, "epoch_time_s": 0.4}]


def test_the_best_epoch_is_the_first_with_the_best_finite_value():
    assert outcome.best_epoch(HISTORY, "val_loss", "minimize") == {
        "metric": "val_loss", "goal": "minimize", "epoch": 2, "value": 1.2}
    assert outcome.best_epoch(HISTORY, "val_accuracy", "maximize")["epoch"] == 2
    assert outcome.best_epoch(HISTORY, "loss", "minimize")["epoch"] == 4
    nan = [{"loss": float("nan")}, {"loss": 0.7}, {"loss": float("inf")}]
    assert outcome.best_epoch(nan, "loss", "minimize")["epoch"] == 2
    assert outcome.best_epoch(HISTORY, "mae", "minimize") is None
    assert outcome.best_epoch([], "loss", "minimize") is None


def test_the_monitored_metric_is_the_sweeps_objective_else_the_jobs():
    spec = SimpleNamespace(fit=SimpleNamespace(early_stopping=None))
    assert outcome.monitored(spec, SimpleNamespace(n_val=40)) == ("val_loss", "minimize")
    assert outcome.monitored(spec, SimpleNamespace(n_val=0)) == ("loss", "minimize")
    stopping = SimpleNamespace(fit=SimpleNamespace(
        early_stopping=SimpleNamespace(monitor="val_accuracy")))
    assert outcome.monitored(stopping, SimpleNamespace(n_val=40)) == ("val_accuracy",
                                                                      "maximize")
    ctx = SimpleNamespace(sweep_spec={"objective": {"metric": "accuracy", "goal": "maximize",
                                                    "at": "best"}})
    assert outcome.monitored(spec, SimpleNamespace(n_val=40), ctx) == ("accuracy", "maximize")


def test_a_trials_fit_time_is_its_share_of_each_epoch():
    assert outcome.fit_share(HISTORY[:2]) == pytest.approx(0.4)
    # A pack of three towers for two epochs, then one alone.
    assert outcome.fit_share(HISTORY[:3], [3, 3, 1]) == pytest.approx(0.2 / 3 * 2 + 0.4)
    assert outcome.fit_share(HISTORY, [2, 2]) == pytest.approx(0.2 + 0.8)


def test_run_metrics_from_a_summary():
    summary = {"best_epoch": {"metric": "val_loss", "goal": "minimize", "epoch": 2,
                              "value": 1.2}, "fit_time_s": 0.4}
    assert outcome.run_metrics(summary, {"loss": 2.302585, "accuracy": 0.1}) == {
        "best_epoch": 2.0, "best_val_loss": 1.2, "fit_time_s": 0.4, "chance_loss": 2.302585,
        "chance_accuracy": 0.1}
    assert outcome.run_metrics({}) == {}


def _lecture(**fit) -> tuple[dict, object]:
    raw = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    raw["fit"].update(fit)
    spec, plan = validate_job(raw)
    return spec.model_dump(mode="json"), plan


def test_each_spec_field_is_one_param_under_its_path():
    raw, plan = _lecture()
    params = run_params(raw, plan, {"steps_per_execution": 8, "keras_backend": "tensorflow"},
                        {"fit.batch_size": 5, "model.hidden_activation": "relu"})
    for key, path in PLAN_SPEC_FIELDS.items():
        assert not (key in params and params.get(path) == params[key]), key
    assert params["fit.batch_size"] == "5" and params["fit.epochs"] == "1000"
    assert "batch_size" not in params and "epochs" not in params
    assert "n_samples" not in params and params["dataset.n_samples"] == "250"
    # The lecture's quantities, which are no spec field, stay; "auto" resolved is not "auto".
    assert params["steps_per_epoch"] == "40" and params["total_updates"] == "40000"
    assert params["fit.steps_per_execution"] == "auto" and params["steps_per_execution"] == "8"
    # A swept factor that is no single spec field is a param under the sweep's path.
    assert params["model.hidden_activation"] == "relu"
    assert params["model.layers.0.activation"] == "relu"


def test_a_plan_value_the_spec_leaves_to_a_default_keeps_its_own_name():
    raw, plan = _lecture(batch_size=None, gradient_descent="batch")
    params = run_params(raw, plan, {})
    assert "fit.batch_size" not in params and params["batch_size"] == "200"
    assert params["fit.gradient_descent"] == "batch" and "gradient_descent" not in params


def _finished_job(**summary) -> dict:
    return {"id": "a" * 32, "name": "lecture-mlp", "status": "succeeded",
            "plan": {"n_val": 50, "epochs": 1000},
            "progress": {"epoch": 1000, "epochs": 1000, "metrics": {
                "loss": 5e-4, "accuracy": 1.0, "val_loss": 2.519, "val_accuracy": 0.22,
                "learning_rate": 0.01, "epoch_time_s": 0.02}},
            "summary": {"epochs_completed": 1000, "best_loss": 5.01e-4, "fit_time_s": 19.2,
                        "final_metrics": {"loss": 5e-4, "val_loss": 2.519}, **summary},
            "mlflow": {}}


def test_show_labels_training_validation_and_the_best_epoch():
    job = _finished_job(best_epoch={"metric": "val_loss", "goal": "minimize", "epoch": 20,
                                    "value": 1.666})
    facts = dict(line.split(None, 1) for line in fmt.plain(fmt.job_details(job)).splitlines()
                 if not line.startswith("best epoch"))
    assert facts["training"] == "loss 5.000e-04  accuracy 1.000 (epoch 1000)"
    assert facts["validation"] == ("val_loss 2.519  val_accuracy 0.2200 (epoch 1000, 50 "
                                   "held-out samples)")
    assert facts["summary"] == ("epochs_completed 1000, lowest training loss 5.010e-04, "
                                "fit 19s")
    assert "best_loss" not in fmt.plain(fmt.job_details(job))
    assert fmt.best_epoch_line(job) == ("20 of 1000 by val_loss: 1.666 (lower is better); "
                                        "training on made it worse (last epoch: 2.519)")
    last = _finished_job(best_epoch={"metric": "val_loss", "goal": "minimize", "epoch": 1000,
                                     "value": 2.519})
    assert fmt.best_epoch_line(last) == "1000 of 1000 by val_loss: 2.519 (lower is better)"
    assert fmt.best_epoch_line(_finished_job()) is None
