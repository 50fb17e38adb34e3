"""The command-line client's pure parts: tables, progress lines, watch output, errors, exit
codes, id resolution and spec loading, on dicts shaped like the API's JSON. The rich
renderables are read as the plain text that goes to a pipe (fmt.plain)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys

import pytest
from rich.console import Console

from kerasyard import ApiError, Client, cli
from kerasyard.cli import format as fmt
from kerasyard.cli import group, inputs
from kerasyard.cli.watch import JobWatcher, SweepWatcher
from kerasyard.errors import api_error_from_response

plain = fmt.plain


def job(status="running", epoch=10, epochs=40, metrics=None, **extra) -> dict:
    out = {"id": "3f2c1a2b" + "0" * 24, "name": "lecture-mlp", "experiment": "lecture",
           "status": status, "queue": "cpu",
           "plan": {"n_train": 200, "batch_size": 5, "steps_per_epoch": 40, "epochs": epochs,
                    "total_updates": 40 * epochs, "total_params": 5374, "input_dim": 50,
                    "gradient_descent": "mini_batch"},
           "progress": {"epoch": epoch, "epochs": epochs,
                        "metrics": {"loss": 0.5, "val_loss": 0.6} if metrics is None else metrics},
           "summary": None, "error": None,
           "mlflow": {"run_id": None, "experiment_id": None, "url": None},
           "created_at": "2026-01-01T10:00:00+00:00", "started_at": None, "finished_at": None}
    out.update(extra)
    return out


# --- numbers, durations, ETA ------------------------------------------------------------------


@pytest.mark.parametrize("value,text", [
    (None, "-"), (0.5, "0.5000"), (0.123456, "0.1235"), (2.33, "2.330"), (1.0, "1.000"),
    (123.456, "123.5"), (1234.5, "1234"), (0.0, "0.0000"), (1.5e-5, "1.500e-05"),
    (2.5e7, "2.500e+07"), (7, "7"), (float("nan"), "nan"), ("relu", "relu"),
])
def test_fmt_number(value, text):
    assert fmt.fmt_number(value) == text


@pytest.mark.parametrize("seconds,text", [
    (None, "?"), (-1, "?"), (3.14, "3.1s"), (42, "42s"), (125, "2m05s"), (3725, "1h02m"),
])
def test_fmt_duration(seconds, text):
    assert fmt.fmt_duration(seconds) == text


def test_eta_is_the_epoch_rate_times_epochs_left():
    assert fmt.eta_seconds(10, 100, 5.0) == pytest.approx(45.0)
    assert fmt.eta_seconds(100, 100, 50.0) == 0.0
    assert fmt.eta_seconds(0, 100, 5.0) is None
    assert fmt.eta_seconds(10, None, 5.0) is None
    assert fmt.eta_seconds(10, 100, None) is None


def test_age_is_relative_within_a_day_then_a_date():
    now = dt.datetime(2026, 1, 1, 10, 2, 5, tzinfo=dt.timezone.utc)
    assert fmt.fmt_age("2026-01-01T10:00:00+00:00", now) == "2m05s ago"
    assert fmt.fmt_age("2025-12-30T09:00:00+00:00", now) == "2025-12-30 09:00"
    assert fmt.fmt_age(None, now) == "-"


# --- tables -----------------------------------------------------------------------------------


def test_table_pads_columns_and_right_aligns_the_columns_asked():
    text = plain(fmt.table(["NAME", "LOSS", "NOTE"], [["a", "0.5", "x"], ["longer", "12.25", ""]],
                           right={1}))
    assert text.splitlines() == [
        "NAME     LOSS  NOTE",
        "a         0.5  x",
        "longer  12.25",
    ]
    text = plain(fmt.table(["A", "B"], [["1", "2"], ["10", "20"]]))
    assert text.splitlines() == ["A   B", "1   2", "10  20"]


def test_colour_on_a_terminal_none_when_piped_or_with_no_color(monkeypatch):
    table = fmt.jobs_table([job("failed")])
    tty = io.StringIO()
    Console(file=tty, force_terminal=True, color_system="standard", width=120).print(table)
    assert "\x1b[" in tty.getvalue()  # the status in red, the header bold
    assert "\x1b[" not in plain(table)
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=120).print(table)
    assert "\x1b[31" not in out.getvalue() and "\x1b[1;31" not in out.getvalue()


def test_jobs_table_columns():
    now = dt.datetime(2026, 1, 1, 10, 0, 30, tzinfo=dt.timezone.utc)
    queued = job("queued", epoch=0, metrics={}, id="b" * 32, name="second")
    text = plain(fmt.jobs_table([job(), queued], now))
    assert text.splitlines() == [
        "ID        NAME         STATUS   EPOCH    LOSS  VAL_LOSS  EXPERIMENT  CREATED",
        "3f2c1a2b  lecture-mlp  running  10/40  0.5000    0.6000  lecture     30s ago",
        "bbbbbbbb  second       queued    0/40       -         -  lecture     30s ago",
    ]


# --- progress lines ---------------------------------------------------------------------------


def test_progress_line_has_bar_epoch_losses_and_eta_from_the_epoch_rate():
    j = job()
    j["progress"]["elapsed_s"] = 5.0  # 10 epochs in 5 s: 30 more take 15 s
    assert fmt.progress_line(j) == ("[#####---------------]  epoch 10/40  loss 0.5000  "
                                    "val_loss 0.6000  ETA 15s")


def test_progress_line_eta_falls_back_to_the_callers_clock_and_omits_missing_parts():
    j = job(metrics={"loss": 0.25})
    assert fmt.progress_line(j, seconds_per_epoch=0.2) == ("[#####---------------]  epoch 10/40  "
                                                           "loss 0.2500  ETA 6.0s")
    assert fmt.progress_line(job(metrics={})) == "[#####---------------]  epoch 10/40"
    done = fmt.progress_line(job("succeeded", epoch=40))
    assert done == "[####################]  epoch 40/40  loss 0.5000  val_loss 0.6000"
    assert fmt.progress_line(job("running", epoch=40)).endswith("fit done, logging to MLflow")


def test_watch_line_queued_and_running():
    assert fmt.watch_line(job("queued", epoch=0)) == "lecture-mlp (3f2c1a2b) queued"
    j = job()
    j["progress"]["elapsed_s"] = 5.0
    assert fmt.watch_line(j) == ("lecture-mlp (3f2c1a2b) running  [#####---------------]  "
                                 "epoch 10/40  loss 0.5000  val_loss 0.6000  ETA 15s")


@pytest.mark.parametrize("width", [120, 80, 60])
def test_the_live_line_keeps_the_numbers_on_a_narrow_terminal(width):
    j = job()
    j["progress"]["elapsed_s"] = 5.0
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(fmt.live_job(j, width=width))
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line and len(line) <= width
    assert line.endswith("epoch 10/40  loss 0.5000  val_loss 0.6000  ETA 15s")
    assert line.startswith("lecture-mlp (3f2c1a2b) running" if width == 120 else "lecture")


def test_final_line_failed_job_names_the_reason_and_mlflow_link():
    j = job("failed", epoch=3, epochs=50, metrics={"loss": float("nan"), "mae": 1e20},
            started_at="2026-01-01T10:00:00+00:00", finished_at="2026-01-01T10:00:04+00:00",
            error={"type": "TrainingFailed", "message": "loss became nan at epoch 3"},
            mlflow={"run_id": "r", "experiment_id": "1", "url": "http://m/#/experiments/1/runs/r"})
    assert plain(fmt.final_line(j)).splitlines() == [
        "lecture-mlp (3f2c1a2b) failed after epoch 3/50  loss nan  mae 1.000e+20  in 4.0s",
        "  TrainingFailed: loss became nan at epoch 3",
        "  MLflow: http://m/#/experiments/1/runs/r",
    ]


def test_final_line_uses_the_summary_and_says_when_it_stopped_early():
    j = job("succeeded", epoch=12, epochs=300,
            summary={"final_metrics": {"val_loss": 0.2, "accuracy": 0.9, "loss": 0.1,
                                       "learning_rate": 0.01}, "stopped_early": True})
    assert plain(fmt.final_line(j)) == ("lecture-mlp (3f2c1a2b) succeeded after epoch 12/300  "
                                 "loss 0.1000  accuracy 0.9000  val_loss 0.2000  (stopped early)")


def test_job_details_lists_the_lecture_arithmetic():
    text = plain(fmt.job_details(job()))
    facts = dict(line.split(None, 1) for line in text.splitlines())
    assert facts["plan"] == ("200 training samples, batch size 5 -> 40 updates an epoch x "
                             "40 epochs = 1600 updates (mini_batch)")
    assert facts["params"] == "5374 (input 50)"
    assert facts["mlflow"] == "- (no run yet)"
    assert "1 update an epoch" in plain(fmt.job_details(job(plan={**job()["plan"],
                                                                 "steps_per_epoch": 1})))


def test_job_details_say_from_which_epoch_a_resumed_job_went_on():
    facts = dict(line.split(None, 1) for line in plain(fmt.job_details(job(
        resumed_from_epoch=57, attempts=2))).splitlines())
    assert facts["resumed"] == ("after epoch 57, from its checkpoint (attempt 2: its worker "
                                "was lost or stopped)")
    assert "resumed" not in plain(fmt.job_details(job(resumed_from_epoch=None)))


def test_job_details_list_each_layers_output_shape_and_params():
    plan = {**job()["plan"], "input_shape": [64], "memory_mb": 3.5, "layers": [
        {"name": "img", "type": "reshape", "output_shape": [8, 8, 1], "params": 0},
        {"name": "conv2d_1", "type": "conv2d", "output_shape": [6, 6, 16], "params": 160}]}
    lines = plain(fmt.job_details(job(plan=plan))).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("layers"))
    assert lines[at].split(None, 1)[1] == "img (reshape) -> 8x8x1, 0 params"
    assert lines[at + 1].strip() == "conv2d_1 (conv2d) -> 6x6x16, 160 params"
    params = next(line for line in lines if line.startswith("params"))
    assert params.split(None, 1)[1] == "5374 (input 64), about 3.5 MB to train"


def test_job_details_say_when_metrics_are_on_training_data_and_what_chance_is():
    facts = dict(line.split(None, 1) for line in plain(fmt.job_details(job(
        metrics_on="training", summary={"epochs_completed": 40,
                                        "chance": {"loss": 2.302585, "accuracy": 0.12}}
    ))).splitlines())
    assert facts["note"].startswith("metrics are on the training data")
    assert facts["chance"] == "loss 2.303  accuracy 0.1200"
    assert "note" not in plain(fmt.job_details(job(metrics_on="validation")))


# --- watchers (plain lines off a terminal, redraw on one) -------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_job_watcher_off_a_tty_prints_status_changes_and_throttled_epochs():
    out, clock = io.StringIO(), Clock()
    w = JobWatcher(Console(file=out), line_interval=2.0, clock=clock)
    w.update(job("queued", epoch=0, metrics={}))
    w.update(job("queued", epoch=0, metrics={}))          # nothing new: no line
    clock.now = 1
    w.update(job("running", epoch=1))                     # status change: a line
    clock.now = 2
    w.update(job("running", epoch=2))                     # within 2 s of the last: held back
    clock.now = 3.5
    w.update(job("running", epoch=5))                     # 2.5 s later: a line
    clock.now = 4
    w.update(job("succeeded", epoch=40))                  # the caller prints the outcome
    lines = out.getvalue().splitlines()
    assert [ln.split("  ")[0] for ln in lines] == [
        "lecture-mlp (3f2c1a2b) queued", "lecture-mlp (3f2c1a2b) running",
        "lecture-mlp (3f2c1a2b) running"]
    assert "epoch 1/40" in lines[1] and "epoch 5/40" in lines[2]
    # No elapsed_s from the service: the rate is measured here, 4 epochs in 2.5 s.
    assert "ETA" not in lines[1] and lines[2].endswith("ETA 22s")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def tty(out: io.StringIO, height: int = 40) -> Console:
    return Console(file=out, force_terminal=True, width=100, height=height)


def test_job_watcher_on_a_tty_redraws_in_place_and_clears_at_the_end():
    out = io.StringIO()
    w = JobWatcher(tty(out), clock=Clock())
    w.update(job("running", epoch=1))
    first = out.getvalue()
    w.update(job("running", epoch=2))
    w.finish(job("succeeded", epoch=40))
    text = out.getvalue()
    assert "epoch 1/40" in first and "epoch 2/40" in text[len(first):]
    # rich's Live: the second frame moves back over the first instead of adding a line, and
    # the last frame is erased for the outcome line.
    assert "\x1b[2K" in text[len(first):]
    assert text.count("\n") <= 2


def sweep(trials, best=None, status="running") -> dict:
    return {"id": "5" * 32, "name": "bs-vs-act", "status": status, "method": "grid",
            "objective": {"metric": "val_loss", "goal": "minimize"}, "max_trials": 4,
            "max_parallel": 2, "repeats": 1,
            "progress": {"done": sum(t["state"] == "succeeded" for t in trials),
                         "total": len(trials), "running": sum(t["state"] == "running"
                                                              for t in trials),
                         "queued": sum(t["state"] == "queued" for t in trials)},
            "best": best, "trials": trials, "mlflow": {"url": None},
            "created_at": "2026-01-01T10:00:00+00:00"}


def trial(number, state, objective=None, std=None, epoch=None, bs=5, act="relu", epochs=50,
          trained_by=None):
    jobs = [] if state == "pending" else [{"id": f"{number}" * 32, "status": state, "seed": 0,
                                           "repeat": 0, "epoch": epoch, "epochs": epochs}]
    return {"number": number, "name": f"bs={bs} act={act}",
            "params": {"fit.batch_size": bs, "model.hidden_activation": act}, "state": state,
            "objective": objective, "objective_std": std, "trained_by": trained_by,
            "jobs": jobs}


def test_trials_table_marks_the_best_and_shows_spread():
    trials = [trial(0, "succeeded", 0.41, 0.02, 50), trial(1, "succeeded", 0.3, None, 50, 40),
              trial(2, "running", epoch=7, act="tanh"), trial(3, "pending", act="sigmoid")]
    text = plain(fmt.trials_table(sweep(trials, best={"number": 1, "name": "bs=40 act=relu",
                                                      "objective": 0.3})))
    assert text.splitlines() == [
        "   #  PARAMS            STATE      EPOCH       val_loss ↓",
        "   0  bs=5 act=relu     succeeded  50/50  0.4100 ± 0.0200",
        "*  1  bs=40 act=relu    succeeded  50/50           0.3000",
        "   2  bs=5 act=tanh     running     7/50                -",
        "   3  bs=5 act=sigmoid  pending        -                -",
    ]


def test_trials_table_keeps_best_and_running_when_cut_for_a_terminal():
    trials = [trial(i, "succeeded", 1.0 + i) for i in range(6)] + [trial(6, "running", epoch=3)]
    s = sweep(trials, best={"number": 0, "objective": 1.0})
    text = plain(fmt.trials_table(s, max_rows=3))
    rows = text.splitlines()
    assert [r.split()[0:2] for r in rows[1:4]] == [["*", "0"], ["1", "bs=5"], ["6", "bs=5"]]
    assert rows[-1] == "   ... 4 more trials (kerasyard show 55555555)"


def test_fmt_params_uses_last_segments_unless_they_clash():
    assert fmt.fmt_params({"fit.batch_size": 5, "model.hidden_activation": "relu"}) == \
        "batch_size=5 hidden_activation=relu"
    assert fmt.fmt_params({"model.layers.0.units": 8, "model.layers.1.units": 4,
                           "compile.optimizer.learning_rate": 0.001}) == \
        "model.layers.0.units=8 model.layers.1.units=4 learning_rate=0.0010"


def test_sweep_watcher_off_a_tty_prints_each_trial_change_once():
    out, clock = io.StringIO(), Clock()
    w = SweepWatcher(Console(file=out), line_interval=5.0, clock=clock)
    w.update(sweep([trial(0, "running", epoch=1), trial(1, "queued")]))
    clock.now = 1
    w.update(sweep([trial(0, "running", epoch=9), trial(1, "queued")]))   # held back: < 5 s
    clock.now = 2
    done = sweep([trial(0, "succeeded", 0.5, epoch=50), trial(1, "succeeded", 0.4, epoch=50)],
                 best={"number": 1, "name": "bs=5 act=relu", "objective": 0.4},
                 status="succeeded")
    w.update(done)
    w.finish(done)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "  trial 0 (bs=5 act=relu) running",
        "  trial 1 (bs=5 act=relu) queued",
        ("sweep bs-vs-act (55555555) running  grid  0/2 done, 1 running, 1 queued  "
         "(trial 0 epoch 1/50)"),
    ]
    assert lines[3:5] == ["  trial 0 (bs=5 act=relu) succeeded  val_loss 0.5000",
                          "  trial 1 (bs=5 act=relu) succeeded  val_loss 0.4000"]
    assert lines[5] == "sweep bs-vs-act (55555555) succeeded  grid  2/2 done, 0 running, 0 queued"
    assert lines[-1] == "best: trial 1 (bs=5 act=relu)  val_loss 0.4000"
    assert sum(1 for ln in lines if ln.startswith("sweep ")) == 2


def test_sweep_watcher_on_a_tty_redraws_the_block_and_leaves_it():
    out = io.StringIO()
    w = SweepWatcher(tty(out), clock=Clock())
    w.update(sweep([trial(0, "running", epoch=1)]))
    first = out.getvalue()
    w.update(sweep([trial(0, "running", epoch=2)]))
    second = out.getvalue()[len(first):]
    assert "1/50" in first and "2/50" in second
    assert "\x1b[2K" in second and "\x1b[1A" in second  # up over the old block, not below it
    done = sweep([trial(0, "succeeded", 0.5, epoch=50)], status="succeeded")
    w.update(done)
    w.finish(done)
    assert w.live is None and "succeeded" in out.getvalue().splitlines()[-2]


def test_a_tall_sweep_is_cut_to_the_terminal():
    out = io.StringIO()
    trials = [trial(i, "succeeded", 1.0 + i, epoch=50) for i in range(30)]
    w = SweepWatcher(tty(out, height=12), clock=Clock())
    w.update(sweep(trials, best={"number": 0, "objective": 1.0}))
    assert "... 23 more trials" in out.getvalue()


def test_a_trial_recorded_from_a_longer_training_reads_from_that_training():
    """share_epochs: trial 1 (10 epochs) is recorded from trial 0's 20-epoch training; while
    that trains, trial 1 shows "from #0" and the training's epoch, capped at its own 10."""
    trainer = trial(0, "running", epoch=7, epochs=20)
    shared = trial(1, "running", epoch=0, epochs=10, trained_by=trainer["jobs"][0]["id"])
    s = sweep([trainer, shared])
    rows = plain(fmt.trials_table(s)).splitlines()
    assert rows[2].split()[3:6] == ["from", "#0", "7/10"]
    assert fmt.running_trials(s) == "trial 0 epoch 7/20, trial 1 (from #0) epoch 7/10"
    trainer["jobs"][0]["epoch"] = 15
    assert plain(fmt.trials_table(s)).splitlines()[2].split()[5] == "10/10"
    assert fmt.trial_event(s, shared) == "trial 1 (bs=5 act=relu) from #0"
    shared.update(state="succeeded", objective=0.5)
    shared["jobs"][0].update(status="succeeded", epoch=10)
    assert plain(fmt.trials_table(s)).splitlines()[2].split()[3:5] == ["succeeded", "10/10"]


def test_sweeps_table():
    now = dt.datetime(2026, 1, 1, 10, 1, 0, tzinfo=dt.timezone.utc)
    s = sweep([trial(0, "succeeded", 0.25)], best={"number": 0, "objective": 0.25})
    assert plain(fmt.sweeps_table([s], now)).splitlines() == [
        "ID        NAME       STATUS   METHOD  DONE  RUNNING  OBJECTIVE     BEST  CREATED",
        "55555555  bs-vs-act  running  grid     1/1        0  val_loss ↓  0.2500  1m00s ago",
    ]
    s["objective"] = {"metric": "val_accuracy", "goal": "maximize"}
    assert fmt.objective_label(s["objective"]) == "val_accuracy ↑"


# --- history ----------------------------------------------------------------------------------


HISTORY = {"job_id": "x", "status": "succeeded", "epochs": [
    {"epoch": 1, "epoch_time_s": 0.5, "val_accuracy": 0.5, "learning_rate": 0.01,
     "accuracy": 0.4, "val_loss": 0.9, "loss": 1.0},
    {"epoch": 2, "epoch_time_s": 0.25, "val_accuracy": 0.6, "learning_rate": 0.01,
     "accuracy": 0.55, "val_loss": 0.8, "loss": 0.7},
]}


def test_history_columns_put_loss_first_then_metrics_val_twins_and_timing_last():
    assert fmt.history_columns(HISTORY["epochs"]) == [
        "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time_s"]


def test_history_table_and_csv():
    assert plain(fmt.history_table(HISTORY)).splitlines() == [
        "epoch    loss  accuracy  val_loss  val_accuracy  learning_rate  epoch_time_s",
        "    1   1.000    0.4000    0.9000        0.5000         0.0100        0.5000",
        "    2  0.7000    0.5500    0.8000        0.6000         0.0100        0.2500",
    ]
    rows = list(csv.DictReader(io.StringIO(fmt.history_csv(HISTORY))))
    assert [float(r["loss"]) for r in rows] == [1.0, 0.7]
    assert plain(fmt.history_table({"status": "queued", "epochs": []})) == \
        "no epochs recorded yet (job queued)"


# --- errors and exit codes --------------------------------------------------------------------


def test_api_error_is_rendered_field_by_field_each_message_once():
    exc = ApiError(422, "invalid_spec", "the job spec is invalid: 3 errors: "
                   "model.layers.2.units: 7 units but 10 classes; fit.epochs: field required; "
                   "(request): no loc",
                   [{"loc": "model.layers.2.units", "msg": "7 units but 10 classes",
                     "value": 7},
                    {"loc": ["fit", "epochs"], "msg": "field required"},
                    {"msg": "no loc"}])
    assert fmt.render_api_error(exc) == [
        "error: invalid_spec: the job spec is invalid: 3 errors",
        "  model.layers.2.units: 7 units but 10 classes",
        "  fit.epochs: field required",
        "  (request): no loc",
    ]
    # A message that does not spell its details out is printed whole.
    exc = ApiError(409, "ambiguous_id", "id prefix 'ab12' matches 2 jobs: a, b; give more "
                   "characters", [{"loc": "job_id", "msg": "a  one (queued)"}])
    assert fmt.render_api_error(exc)[0] == ("error: ambiguous_id: id prefix 'ab12' matches 2 "
                                            "jobs: a, b; give more characters")


def test_error_json_from_the_api_and_from_a_proxy():
    body = json.dumps({"error": {"code": "illegal_state", "message": "already ended",
                                 "details": []}}).encode()
    exc = api_error_from_response(409, body, "CONFLICT")
    assert (exc.status, exc.code, exc.message, exc.details) == (409, "illegal_state",
                                                                "already ended", [])
    exc = api_error_from_response(502, b"<html>Bad Gateway</html>", "Bad Gateway")
    assert exc.code == "http_error"
    assert exc.message == "HTTP 502 Bad Gateway: <html>Bad Gateway</html>"
    degraded = {"status": "degraded", "components": {
        "database": {"ok": True, "detail": "ok"}, "broker": {"ok": False, "detail": "refused"}}}
    exc = api_error_from_response(503, json.dumps(degraded).encode(), "Service Unavailable")
    assert exc.code == "degraded" and exc.message == "the service is degraded: broker: refused"
    assert exc.body == degraded


@pytest.mark.parametrize("status,code", [
    ("succeeded", 0), ("failed", 1), ("cancelled", 3), ("pruned", 4), ("running", 4), (None, 4),
])
def test_exit_code_for_status(status, code):
    assert fmt.exit_code_for_status(status) == code


@pytest.mark.parametrize("http,code", [(400, 2), (401, 2), (404, 2), (409, 2), (413, 2),
                                       (422, 2), (500, 4), (503, 4)])
def test_exit_code_for_api_errors(http, code):
    assert fmt.exit_code_for_error(ApiError(http, "x", "y")) == code


def test_help_documents_every_exit_code(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for n, words in [(0, "succeeded"), (1, "failed"), (2, "usage or validation"),
                     (3, "cancelled"), (4, "pruned"), (5, "cannot reach the service")]:
        assert f"  {n}  " in out and words in out


# --- argument parsing, spec files, client set-up ----------------------------------------------


@pytest.fixture()
def api_404():
    """A loopback HTTP server that answers every request with the API's 404 JSON."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"error": {"code": "not_found", "message": "no such thing",
                                         "details": []}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(5)


@pytest.mark.parametrize("argv", [
    ["--url", "{url}", "--json", "show", "abcd"], ["show", "abcd", "--url", "{url}", "--json"],
    ["--json", "show", "--url", "{url}", "abcd"]])
def test_global_options_work_before_or_after_the_command(api_404, capsys, argv):
    assert cli.main([a.format(url=api_404) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["message"] == "no job or sweep with id 'abcd'"
    assert err.startswith("error: not_found: no job or sweep with id 'abcd'")


def test_usage_errors_exit_2(capsys):
    assert cli.main(["submit"]) == 2
    assert "Missing argument 'SPEC'" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "Usage: kerasyard" in capsys.readouterr().err
    assert cli.main(["jobs", "--status", "done"]) == 2
    assert cli.main(["compare", "abcd"]) == 2


def test_shell_completion_of_ids_asks_the_service(monkeypatch, capsys):
    class Listing:
        def list_jobs(self, limit):
            return {"jobs": [{"id": "ab12" + "0" * 28, "name": "mlp", "status": "running"},
                             {"id": "cd34" + "0" * 28, "name": "other", "status": "queued"}]}

        def list_sweeps(self, limit):
            return {"sweeps": [{"id": "ab99" + "0" * 28, "name": "grid", "status": "running"}]}

    monkeypatch.setattr(group, "_client", lambda ctx, timeout=30.0: Listing())
    monkeypatch.setenv("_KERASYARD_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "kerasyard show ab")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit):
        cli.main([])
    assert capsys.readouterr().out.split() == ["plain,ab120000", "plain,ab990000"]


def test_shell_completion_script(monkeypatch, capsys):
    monkeypatch.setenv("_KERASYARD_COMPLETE", "bash_source")
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 0
    assert "_kerasyard_completion" in capsys.readouterr().out


def test_load_spec_yaml_json_and_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("name: x\nfit:\n  epochs: 3\n")
    assert inputs.load_spec(str(tmp_path / "a.yaml")) == {"name": "x", "fit": {"epochs": 3}}
    (tmp_path / "b.json").write_text('{"name": "x",\n "fit": {]}')
    with pytest.raises(inputs.UsageError, match=r"b.json is not valid JSON: .* line 2 column"):
        inputs.load_spec(str(tmp_path / "b.json"))
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(inputs.UsageError, match="must hold one object"):
        inputs.load_spec(str(tmp_path / "c.yaml"))
    with pytest.raises(inputs.UsageError, match="cannot read"):
        inputs.load_spec(str(tmp_path / "missing.yaml"))


def test_client_url_and_token_defaults(monkeypatch):
    monkeypatch.setenv("KERASYARD_URL", "https://ky.example:8443/api/v1/")
    monkeypatch.setenv("KERASYARD_API_TOKEN", "s3cret")
    c = Client()
    assert (c.base_url, c.token) == ("https://ky.example:8443", "s3cret")
    c = Client("localhost:9000", token="other")
    assert (c.base_url, c.token) == ("http://localhost:9000", "other")
    monkeypatch.delenv("KERASYARD_URL")
    monkeypatch.delenv("KERASYARD_API_TOKEN")
    assert (Client().base_url, Client().token) == ("http://127.0.0.1:8000", None)


def test_every_public_client_method_documents_its_arguments_result_and_errors():
    """The Python client's reference is its docstrings: each public method says what it takes
    (Args, when it takes anything), what it returns and what it raises."""
    import inspect

    missing = []
    for name, method in inspect.getmembers(Client, inspect.isfunction):
        if name.startswith("_"):
            continue
        doc = inspect.getdoc(method) or ""
        takes = [p for p in inspect.signature(method).parameters if p != "self"]
        for section in (["Args:"] if takes else []) + ["Returns:", "Raises:"]:
            if section not in doc:
                missing.append(f"Client.{name}: no {section}")
    assert not missing, missing


def test_the_client_imports_no_server_or_training_library():
    import subprocess

    code = ("import sys, kerasyard.cli; heavy = {'tensorflow', 'keras', 'mlflow', 'flask', "
            "'sqlalchemy', 'celery', 'pydantic', 'service', 'worker', 'requests'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- id resolution ----------------------------------------------------------------------------


class StubClient:
    """The Client methods resolve() uses, over in-memory jobs and sweeps, resolving a unique id
    prefix as the API does (a 409 for an ambiguous one)."""

    def __init__(self, jobs, sweeps):
        self.jobs = {j["id"]: j for j in jobs}
        self.sweeps = {s["id"]: s for s in sweeps}

    @staticmethod
    def _find(rows, ident, what):
        found = [r for i, r in rows.items() if i.startswith(ident)]
        if len(found) > 1:
            raise ApiError(409, "ambiguous_id", f"id prefix {ident!r} matches {len(found)} "
                           f"{what}s")
        if not found:
            raise ApiError(404, "not_found", f"no {what} with id {ident!r}")
        return found[0]

    def get_job(self, job_id):
        return self._find(self.jobs, job_id, "job")

    def get_sweep(self, sweep_id):
        return self._find(self.sweeps, sweep_id, "sweep")

    def list_jobs(self, limit=None):
        return {"jobs": list(self.jobs.values())[:limit], "next_cursor": None}


def test_resolve_jobs_first_then_sweeps_and_no_id_is_the_newest_job():
    a, b = {"id": "abc1" + "0" * 28}, {"id": "abc2" + "0" * 28}
    s = {"id": "fed9" + "0" * 28}
    client = StubClient([b, a], [s])
    assert inputs.resolve(client, a["id"]) == ("job", a)
    assert inputs.resolve(client, s["id"]) == ("sweep", s)
    assert inputs.resolve(client, "abc2") == ("job", b)
    assert inputs.resolve(client, "fed9") == ("sweep", s)
    assert inputs.resolve(client, None) == ("job", b)  # the listing is newest first
    with pytest.raises(ApiError) as info:
        inputs.resolve(client, "abc")
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        inputs.resolve(client, "0123")
    assert info.value.status == 404
    assert info.value.message == "no job or sweep with id '0123'"
    with pytest.raises(inputs.UsageError, match="no jobs yet"):
        inputs.resolve(StubClient([], []), None)
    with pytest.raises(inputs.UsageError, match="is a sweep; history is per job"):
        inputs.resolve_job(client, "fed9", "history")


# --- compare ----------------------------------------------------------------------------------


def test_compare_shows_spec_differences_the_lecture_quantities_and_final_metrics():
    spec = {"name": "a", "fit": {"batch_size": 5, "epochs": 40},
            "model": {"layers": [{"units": 64, "activation": "relu"}]}}
    other = {"name": "b", "fit": {"batch_size": 200, "epochs": 40},
             "model": {"layers": [{"units": 64, "activation": "tanh"}]}}
    a = job("succeeded", epoch=40, spec=spec,
            summary={"final_metrics": {"loss": 0.1, "accuracy": 0.9}},
            started_at="2026-01-01T10:00:00+00:00", finished_at="2026-01-01T10:00:04+00:00")
    b = job("succeeded", epoch=40, spec=other, id="b" * 32, name="full-batch",
            plan={**a["plan"], "batch_size": 200, "steps_per_epoch": 1, "total_updates": 40,
                  "gradient_descent": "batch"},
            summary={"final_metrics": {"loss": 0.3, "accuracy": 0.7}})
    assert fmt.spec_differences([a, b]) == {"fit.batch_size": [5, 200],
                                            "model.layers.0.activation": ["relu", "tanh"]}
    rows = {r.strip().split("  ")[0]: r.split()[-2:]
            for r in plain(fmt.compare_table([a, b])).splitlines()[1:]}
    assert rows["fit.batch_size"] == ["5", "200"]
    assert rows["model.layers.0.activation"] == ["relu", "tanh"]
    assert rows["steps per epoch"] == ["40", "1"]
    assert rows["total updates"] == ["1600", "40"]
    assert rows["gradient descent"] == ["mini_batch", "batch"]
    assert rows["loss"] == ["0.1000", "0.3000"]
    assert rows["took"] == ["4.0s", "-"]
    data = fmt.compare_data([a, b])
    assert [j["final_metrics"]["accuracy"] for j in data["jobs"]] == [0.9, 0.7]


def test_compare_plot_writes_one_png_of_every_curve(tmp_path):
    from kerasyard.cli.plot import curves_png, metrics_to_plot

    other = [{**row, "loss": row["loss"] * 2, "val_loss": None} for row in HISTORY["epochs"]]
    histories = [HISTORY["epochs"], other]
    assert metrics_to_plot(histories) == ["loss", "accuracy"]
    path = tmp_path / "curves.png"
    assert curves_png(str(path), [job(), job(id="b" * 32)], histories) == ["loss", "accuracy"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_plot_without_matplotlib_says_how_to_get_it(monkeypatch, tmp_path):
    from kerasyard.cli.plot import PlotUnavailable, curves_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(PlotUnavailable, match=r"--plot needs matplotlib: pip install "):
        curves_png(str(tmp_path / "x.png"), [job()], [HISTORY["epochs"]])
    assert not (tmp_path / "x.png").exists()
