"""The lean recording of a run (KERASYARD_LEAN_RECORDING, on by default): the learning curve
and confusion matrix as SVG written without matplotlib (worker/training/svg_plots.py), the
run's artifacts named by it, and the MLflow requests a run's start no longer makes."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from service.jobspec import validate_job
from tests.helpers import ROOT
from worker.recording import artifacts, tracking
from worker.training import svg_plots

NS = "{http://www.w3.org/2000/svg}"


def _texts(root) -> list[str]:
    return [t.text for t in root.iter(f"{NS}text")]


def test_the_learning_curve_is_svg_with_a_panel_per_metric(tmp_path):
    history = {"loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.4, 0.9],
               "accuracy": [0.1, 0.4, 0.7], "val_accuracy": [0.1, 0.3, 0.6],
               "epoch_time_s": [0.1, 0.1, 0.1]}
    path = svg_plots.learning_curve(history, tmp_path / "lc.svg", "lecture: batch 5\n(note)",
                                    {"loss": 2.3, "accuracy": 0.1})
    root = ET.parse(path).getroot()
    texts = _texts(root)
    assert {"lecture: batch 5", "(note)", "train loss", "validation loss", "train accuracy",
            "validation accuracy", "chance (2.3)", "chance (0.1)"} <= set(texts)
    assert "epoch_time_s" not in texts and texts.count("epoch") == 2  # two panels
    assert len(root.findall(f".//{NS}polyline")) == 4  # train and validation, two metrics
    dashed = [e for e in root.iter(f"{NS}line") if e.get("stroke-dasharray") == "5,4"]
    assert len(dashed) == 4  # each chance line and its legend entry


def test_user_text_is_printed_as_written_never_read_as_markup(tmp_path):
    title = "cost $x$ & <b>bold</b> \"q\" 'a'"
    svg_plots.learning_curve({"loss": [1.0, 0.5]}, tmp_path / "c.svg", title)
    names = ["<a>", "b & c", "$^"]
    svg_plots.confusion_matrix(np.eye(3, dtype=int), names, tmp_path / "m.svg", title)
    for name in ("c.svg", "m.svg"):
        texts = _texts(ET.parse(tmp_path / name).getroot())
        assert title in texts
    assert set(names) <= set(_texts(ET.parse(tmp_path / "m.svg").getroot()))


def test_a_nan_epoch_is_a_gap_and_a_single_epoch_a_dot(tmp_path):
    svg_plots.learning_curve({"loss": [1.0, math.nan, 0.5, 0.4]}, tmp_path / "g.svg", "t")
    root = ET.parse(tmp_path / "g.svg").getroot()
    assert len(root.findall(f".//{NS}polyline")) == 1  # 0.5, 0.4; the 1.0 alone is a dot
    assert len(root.findall(f".//{NS}circle")) == 1
    svg_plots.learning_curve({"loss": [0.7]}, tmp_path / "one.svg", "t")  # a one-epoch job
    assert len(ET.parse(tmp_path / "one.svg").getroot().findall(f".//{NS}circle")) == 1


def test_the_confusion_matrix_has_a_cell_and_count_per_pair(tmp_path):
    counts = np.array([[5, 1, 0], [0, 3, 2], [1, 0, 7]])
    root = ET.parse(svg_plots.confusion_matrix(counts, ["a", "b", "c"], tmp_path / "m.svg",
                                               "confusion matrix (validation set)")).getroot()
    cells = [r for r in root.iter(f"{NS}rect") if r.get("width") == r.get("height")
             and r.get("fill", "").startswith("#")]
    assert len(cells) == 9
    texts = _texts(root)
    assert [texts.count(str(v)) >= 1 for v in (5, 3, 7, 2)] == [True] * 4
    assert {"predicted", "true", "confusion matrix (validation set)"} <= set(texts)


def test_nice_ticks_are_round_and_cover_the_range():
    assert svg_plots.nice_ticks(0.0, 1.0) == [0.0, 0.5, 1.0]
    assert svg_plots.nice_ticks(0.0, 1.0, 9) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg_plots.nice_ticks(1, 7, 6, integer=True) == [2, 4, 6]
    assert svg_plots.nice_ticks(1, 2, 6, integer=True) == [1, 2]  # never a half epoch
    assert svg_plots.nice_ticks(3.0, 3.0) == [3.0]
    assert svg_plots.nice_ticks(math.nan, 1.0) == []


@pytest.mark.parametrize(("lean", "ext"), [(True, "svg"), (False, "png")])
def test_a_runs_artifacts_name_their_plots_by_the_setting(tmp_path, lean, ext):
    import keras

    raw = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    spec, plan = validate_job(raw)
    model = keras.Sequential([keras.Input((50,)), keras.layers.Dense(10, activation="softmax")])
    rng = np.random.default_rng(0)
    data = SimpleNamespace(x_train=rng.normal(size=(8, 50)).astype("float32"),
                           y_train=np.arange(8) % 10, x_val=rng.normal(size=(4, 50))
                           .astype("float32"), y_val=np.arange(4), class_names=[
                               str(i) for i in range(10)])
    logged = {}

    class Client:
        def log_artifacts(self, run_id, folder):
            logged[run_id] = sorted(p.name for p in Path(folder).iterdir())

    history = [{"loss": 2.3, "accuracy": 0.1, "val_loss": 2.3, "val_accuracy": 0.1}]
    artifacts.write_artifacts(Client(), "r", raw, spec, plan, model, data, history, lean=lean)
    assert logged["r"] == sorted(["spec.json", "model_summary.txt", "history.csv",
                                  f"learning_curve.{ext}", f"confusion_matrix.{ext}"])


class FakeClient:
    """Records MLflow calls; ``existing``: the run a search finds."""

    def __init__(self, existing: str | None = None):
        self.calls: list[tuple] = []
        self.existing = existing

    def search_runs(self, *a, **k):
        self.calls.append(("search_runs",))
        return [SimpleNamespace(info=SimpleNamespace(run_id=self.existing))] \
            if self.existing else []

    def create_run(self, exp_id, run_name, tags):
        self.calls.append(("create_run", dict(tags)))
        return SimpleNamespace(info=SimpleNamespace(run_id="new"))

    def log_batch(self, run_id, params=(), metrics=(), tags=()):
        self.calls.append(("log_batch", run_id, len(params), [m.key for m in metrics]))


TAGS = {"kerasyard.job_id": "j1", "kerasyard.attempt": "1"}


def test_a_first_try_creates_the_run_without_searching_and_logs_aids_with_params():
    from mlflow.entities import Metric

    cl = FakeClient(existing="old")
    aids = [Metric("chance_loss", 2.3, 0, 0)]
    run_id = tracking.start_job_run(cl, "0", "n", TAGS, {"a": "1", "b": "2"}, aids,
                                    retried=False)
    assert run_id == "new"
    assert [c[0] for c in cl.calls] == ["create_run", "log_batch"]  # two requests in all
    assert cl.calls[1] == ("log_batch", "new", 2, ["chance_loss"])


def test_a_retry_finds_the_run_an_earlier_try_created():
    cl = FakeClient(existing="old")
    assert tracking.start_job_run(cl, "0", "n", TAGS, {"a": "1"}, retried=True) == "old"
    assert [c[0] for c in cl.calls] == ["search_runs", "log_batch"]


def test_params_beyond_one_batch_carry_the_metrics_only_in_the_first():
    from mlflow.entities import Metric

    cl = FakeClient()
    params = {f"p{i:03d}": str(i) for i in range(tracking.PARAM_BATCH + 5)}
    tracking.log_params(cl, "r", params, [Metric("chance_loss", 2.3, 0, 0)])
    assert cl.calls == [("log_batch", "r", tracking.PARAM_BATCH, ["chance_loss"]),
                        ("log_batch", "r", 5, [])]
    cl = FakeClient()
    tracking.log_params(cl, "r", {}, [Metric("chance_loss", 2.3, 0, 0)])
    assert cl.calls == [("log_batch", "r", 0, ["chance_loss"])]
    cl = FakeClient()
    tracking.log_params(cl, "r", {})
    assert cl.calls == []


def test_the_reading_aids_without_validation_data_are_tags_of_the_run():
    from worker.jobs.mlflow_run import MlflowRun

    metrics, tags = MlflowRun._reading_aids(SimpleNamespace(n_val=0), {"loss": 2.3})
    assert [(m.key, m.value, m.step) for m in metrics] == [("chance_loss", 2.3, 0)]
    assert tags["kerasyard.metrics_on"] == "training" and "mlflow.note.content" in tags
    assert MlflowRun._reading_aids(SimpleNamespace(n_val=50), None) == ([], {})
