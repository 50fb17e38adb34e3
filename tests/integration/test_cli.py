"""The `kerasyard` command and `kerasyard.Client` against a live service: the Flask app served
over real HTTP, PostgreSQL, Redis, a Celery worker process and an MLflow server."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack import ApiServer, free_port
from kerasyard import ApiError, Client
from tests.helpers import ROOT, diverging_spec, ended_run, tiny_spec, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_url(app):
    """The app fixture served over HTTP on a free loopback port, in a thread (no request log:
    the watch loops poll several times a second)."""
    with ApiServer(app, quiet=True) as server:
        yield server.url


def cli(url: str | None, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m kerasyard.cli [--url URL] ARGS` as a subprocess (stdout is a pipe, not a TTY)."""
    cmd = [sys.executable, "-m", "kerasyard.cli"] + (["--url", url] if url else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          check=False)


def write_spec(tmp_path: Path, spec: dict, name: str) -> str:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(spec))
    else:
        path.write_text(yaml.safe_dump(spec))
    return str(path)


def first_id(stdout: str) -> str:
    match = re.match(r"([0-9a-f]{32})\s", stdout)
    assert match, stdout
    return match.group(1)


EPOCHS = 60


@pytest.fixture(scope="module")
def watched(api_url, worker, tmp_path_factory):
    """One tiny job, with validation data, submitted from a YAML file with --watch."""
    spec = tiny_spec("cli-watch", epochs=EPOCHS)
    spec["fit"]["validation_split"] = 0.25
    path = write_spec(tmp_path_factory.mktemp("cli"), spec, "tiny.yaml")
    result = cli(api_url, "submit", path, "--watch", "--interval", "0.1", "--line-interval", "0")
    match = re.search(r"submitted cli-watch \(\w+\) as ([0-9a-f]{32})", result.stdout)
    assert match, (result.stdout, result.stderr)
    return result, Client(api_url).get_job(match.group(1))


def test_submit_watch_prints_progress_and_exits_0(watched, api_url):
    result, job = watched
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert job["status"] == "succeeded"
    lines = result.stdout.splitlines()
    progress = [ln for ln in lines
                if re.search(rf"running  \[[#-]{{20}}\]  epoch \d+/{EPOCHS}", ln)]
    assert progress, result.stdout
    trained = [ln for ln in progress if re.search(r"epoch [1-9]\d*/\d+  loss \d", ln)]
    assert trained and all("val_loss" in ln for ln in trained), result.stdout
    # Plain lines off a TTY: no carriage returns or escape codes.
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    final = next(ln for ln in lines if " succeeded after " in ln)
    assert final.startswith(f"cli-watch ({job['id'][:8]}) succeeded after epoch {EPOCHS}/{EPOCHS}")
    assert "val_accuracy" in final and re.search(r"in \d", final)
    assert f"MLflow: {job['mlflow']['url']}" in result.stdout


def test_invalid_spec_exits_2_with_errors_field_by_field(api_url, tmp_path):
    spec = tiny_spec("cli-bad")
    spec["model"]["layers"][0]["activation"] = "rleu"
    spec["model"]["layers"][1]["units"] = 0
    before = Client(api_url).list_jobs(limit=500)["jobs"]
    result = cli(api_url, "submit", write_spec(tmp_path, spec, "bad.json"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines[0] == "error: invalid_spec: the job spec is invalid: 2 errors"
    assert result.stderr.count("'rleu' is not allowed") == 1  # said once, on its field
    assert any(re.fullmatch(r"  model\.layers\.0\.activation: 'rleu' is not allowed.*"
                            r"did you mean 'relu'\?", ln) for ln in lines), lines
    assert any(ln.startswith("  model.layers.1.units: ") for ln in lines), lines
    assert result.stdout == ""
    assert Client(api_url).list_jobs(limit=500)["jobs"] == before

    # --json: the same error as JSON on stdout, still exit 2.
    result = cli(api_url, "--json", "submit", write_spec(tmp_path, spec, "bad.yaml"))
    assert result.returncode == 2
    err = json.loads(result.stdout)["error"]
    assert err["status"] == 422 and err["code"] == "invalid_spec"
    locs = {d["loc"] for d in err["details"]}
    assert {"model.layers.0.activation", "model.layers.1.units"} <= locs


def test_unreadable_spec_and_bad_usage_exit_2(api_url, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",\n  "fit": }')
    result = cli(api_url, "submit", str(broken))
    assert result.returncode == 2
    assert "broken.json is not valid JSON" in result.stderr and "line 2" in result.stderr
    result = cli(api_url, "submit", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = cli(api_url, "jobs", "--limit", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == ("error: bad_request: limit='0' must be an integer "
                                             "from 1 to 500")
    assert cli(api_url, "frobnicate").returncode == 2
    assert cli(api_url, "show", "0" * 32).returncode == 2


def test_jobs_table_and_json(watched, api_url):
    _, job = watched
    result = cli(api_url, "jobs", "--limit", "50")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "EPOCH", "LOSS", "VAL_LOSS", "EXPERIMENT",
                              "CREATED"]
    row = next(r for r in rows if r.startswith(job["id"][:8]))
    cells = row.split()
    assert cells[1:4] == ["cli-watch", "succeeded", f"{EPOCHS}/{EPOCHS}"]
    assert float(cells[4]) == pytest.approx(job["progress"]["metrics"]["loss"], rel=1e-3)
    # Aligned: every row's STATUS column starts where the header's does.
    col = header.index("STATUS")
    assert all(r[col - 2:col] == "  " and r[col] != " " for r in rows)

    result = cli(api_url, "jobs", "--status", "succeeded", "--json")
    data = json.loads(result.stdout)
    assert job["id"] in [j["id"] for j in data["jobs"]]
    assert {j["status"] for j in data["jobs"]} == {"succeeded"}


def test_show_by_prefix_history_and_open(watched, api_url, mlflow_client, mlflow_server):
    _, job = watched
    result = cli(api_url, "show", job["id"][:7])
    assert result.returncode == 0, result.stderr
    facts = dict(re.split(r"\s{2,}", ln, maxsplit=1) for ln in result.stdout.splitlines())
    plan = job["plan"]
    assert facts["job"] == job["id"] and facts["status"] == "succeeded"
    assert facts["plan"] == (f"{plan['n_train']} training samples, batch size "
                             f"{plan['batch_size']} -> {plan['steps_per_epoch']} updates an "
                             f"epoch x {EPOCHS} epochs = {plan['steps_per_epoch'] * EPOCHS} "
                             "updates (mini_batch)")
    assert facts["mlflow"] == job["mlflow"]["url"]
    assert facts["progress"].startswith(f"[{'#' * 20}]  epoch {EPOCHS}/{EPOCHS}  loss ")

    api_history = Client(api_url).job_history(job["id"])["epochs"]
    result = cli(api_url, "history", job["id"][:10])
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                              "learning_rate", "epoch_time_s"]
    assert len(rows) == EPOCHS
    assert [int(r.split()[0]) for r in rows] == list(range(1, EPOCHS + 1))
    assert float(rows[0].split()[1]) == pytest.approx(api_history[0]["loss"], rel=1e-3)

    result = cli(api_url, "history", job["id"], "--csv")
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [float(r["loss"]) for r in table] == [e["loss"] for e in api_history]

    result = cli(api_url, "open", job["id"][:8])
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    run_id = job["mlflow"]["run_id"]
    # The model-training view of the run (MLflow 3 opens its GenAI view otherwise).
    assert url == (f"{mlflow_server}/#/experiments/{job['mlflow']['experiment_id']}/runs/"
                   f"{run_id}?workflowType=machine_learning")
    assert ended_run(mlflow_client, run_id).info.status == "FINISHED"


def test_compare_two_runs_plot_their_curves_and_no_id_means_the_newest(watched, api_url,
                                                                       tmp_path):
    _, first = watched
    spec = tiny_spec("cli-compare", epochs=4)
    spec["fit"].update(validation_split=0.25, batch_size=48)  # 48 training samples: full batch
    result = cli(api_url, "submit", write_spec(tmp_path, spec, "second.json"), "--watch",
                 "--interval", "0.2")
    assert result.returncode == 0, (result.stdout, result.stderr)
    second = re.search(r"as ([0-9a-f]{32})", result.stdout).group(1)

    # No id: the newest job.
    result = cli(api_url, "show")
    assert result.returncode == 0, result.stderr
    assert f"job         {second}" in result.stdout
    result = cli(api_url, "history", "--csv")
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 4

    png = tmp_path / "curves.png"
    result = cli(api_url, "compare", first["id"][:8], second[:8], "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}: loss, accuracy by epoch" in result.stderr
    rows = {r.strip().split("  ")[0]: r.split()[-2:] for r in result.stdout.splitlines()[1:]}
    assert rows["fit.batch_size"] == ["16", "48"]
    assert rows["fit.epochs"] == [str(EPOCHS), "4"]
    assert rows["gradient descent"] == ["mini_batch", "batch"]
    assert rows["steps per epoch"] == [str(first["plan"]["steps_per_epoch"]), "1"]
    assert rows["status"] == ["succeeded", "succeeded"]

    result = cli(api_url, "compare", first["id"], second, "--json")
    data = json.loads(result.stdout)
    assert data["spec_differences"]["fit.batch_size"] == [16, 48]
    assert [j["epochs_completed"] for j in data["jobs"]] == [EPOCHS, 4]


def test_diverging_job_exits_1_with_the_reason(api_url, worker, tmp_path):
    spec = diverging_spec("cli-diverge")
    result = cli(api_url, "submit", write_spec(tmp_path, spec, "diverge.json"), "--watch",
                 "--interval", "0.2")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert re.search(r"cli-diverge \(\w+\) failed after epoch \d+/50", result.stdout)
    assert re.search(r"TrainingFailed: loss became \S+ at epoch \d+: training diverged",
                     result.stdout), result.stdout
    assert "lower compile.optimizer.learning_rate" in result.stdout


def test_cancel_a_running_job_then_watch_exits_3(api_url, worker, tmp_path):
    spec = tiny_spec("cli-long", epochs=5000)
    spec["fit"]["batch_size"] = 64
    result = cli(api_url, "submit", write_spec(tmp_path, spec, "long.json"), "--queue", "cpu")
    assert result.returncode == 0, result.stderr
    job_id = first_id(result.stdout)
    assert "queued on cpu: 1 update an epoch x 5000 epochs = 5000 updates" in result.stdout
    api = Client(api_url)
    wait_for(lambda: api.get_job(job_id)["progress"]["epoch"] >= 2, 120, what="a few epochs")

    # The watch starts first and has printed a live line before the cancel, so the cancel
    # cannot win the race and leave the watch nothing but the final state to print.
    # --json: the final job on stdout, the live lines on stderr.
    cmd = [sys.executable, "-m", "kerasyard.cli", "--url", api_url, "watch", job_id,
           "--interval", "0.2", "--json"]
    watch = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        first_line = watch.stderr.readline()
        assert re.search(rf"cli-long \({job_id[:8]}\) running  \[", first_line), first_line
        result = cli(api_url, "cancel", job_id[:9])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (f"cancel requested for job cli-long ({job_id[:8]}): "
                                         "now running; it stops at its next epoch boundary")
        stdout, stderr = watch.communicate(timeout=120)
    finally:
        watch.kill()
    assert watch.returncode == 3, (stdout, first_line + stderr)
    final = json.loads(stdout)
    assert final["id"] == job_id and final["status"] == "cancelled"
    assert 2 <= final["summary"]["epochs_completed"] < 5000

    result = cli(api_url, "cancel", job_id)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: illegal_state: job {job_id} is already cancelled")


def test_unreachable_service_exits_5():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["show", "abc"], ["submit", str(ROOT / "examples/lecture_mlp.json")]):
        result = cli(url, *args)
        assert result.returncode == 5, (args, result.stderr)
        assert result.stderr.startswith(f"error: cannot reach the kerasyard service at {url}")


def test_installed_script_documents_exit_codes():
    script = Path(sys.executable).parent / "kerasyard"
    assert script.exists(), "run `pip install -e .`: pyproject.toml declares the kerasyard script"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0
    for line in ("0  succeeded", "1  the job or sweep failed", "2  usage or validation error",
                 "3  the job or sweep was cancelled", "4  pruned", "5  cannot reach the service"):
        assert line in result.stdout


def test_python_client_errors_pages_uploads_health(api_url, watched, tmp_path):
    api = Client(api_url + "/api/v1/")
    with pytest.raises(ApiError) as info:
        api.submit_job(tiny_spec("bad", fit={"batch_size": 16, "epochs": -1}))
    assert info.value.status == 422 and info.value.code == "invalid_spec"
    assert [d["loc"] for d in info.value.details] == ["fit.epochs"]
    with pytest.raises(ApiError) as info:
        api.get_job("nope")
    assert info.value.status == 404 and info.value.code == "not_found"

    everything = [j["id"] for j in api.list_jobs(limit=500)["jobs"]]
    assert len(everything) >= 3
    assert [j["id"] for j in api.iter_jobs(page_size=2)] == everything

    data = tmp_path / "points.csv"
    data.write_text("x1,x2,target\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(30)))
    result = cli(api_url, "--json", "upload", str(data), "--name", "points")
    assert result.returncode == 0, result.stderr
    uploaded = json.loads(result.stdout)
    got = api.get_dataset(uploaded["id"])
    assert got["n_rows"] == 30 and got["name"] == "points" and got["filename"] == "points.csv"

    assert api.health()["status"] == "ok"
    result = cli(api_url, "health")
    assert result.returncode == 0 and result.stdout.startswith("ok")


# --- sweeps ----------------------------------------------------------------------------------


def sweep_spec(name: str, epochs: int, batch_sizes=(8, 16)) -> dict:
    base = tiny_spec(name, epochs=epochs)
    base["fit"]["validation_split"] = 0.25
    return {"name": name, "base": base, "method": "grid",
            "parameters": {"fit.batch_size": list(batch_sizes)},
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "max_trials": len(batch_sizes), "max_parallel": 1}


def test_sweep_watch_table_show_jobs_open(api_url, worker, tmp_path):
    path = write_spec(tmp_path, sweep_spec("cli-sweep", epochs=3), "sweep.yaml")
    result = cli(api_url, "sweep", path, "--watch", "--interval", "0.5")
    assert result.returncode == 0, (result.stdout, result.stderr)
    sweep_id = re.search(r"submitted sweep cli-sweep as ([0-9a-f]{32})", result.stdout).group(1)
    sweep = Client(api_url).get_sweep(sweep_id)
    assert sweep["status"] == "succeeded"
    out = result.stdout
    for trial in sweep["trials"]:
        assert re.search(rf"trial {trial['number']} \(.+\) succeeded  val_loss \d", out), out
    table = out[out.index("PARAMS"):].splitlines()
    best = [ln for ln in table if ln.startswith("*")]
    assert len(best) == 1 and f" {sweep['best']['number']} " in best[0]
    assert f"best: trial {sweep['best']['number']}" in out
    # One seed each: the runner-up is within noise, and the sentence says so.
    assert sweep["best"]["n_seeds"] == 1 and sweep["best"]["clear"] is False
    assert re.search(r"best: trial \d+ \(.+\)  val_loss \S+ over 1 seed; runner-up trial "
                     r"\d+ \(.+\) \S+ over 1 seed; within noise: add repeats", out), out

    result = cli(api_url, "sweeps")
    assert result.returncode == 0
    assert any(ln.startswith(sweep_id[:8]) and "succeeded" in ln
               for ln in result.stdout.splitlines())
    result = cli(api_url, "show", sweep_id[:8])
    assert result.returncode == 0 and re.search(rf"^sweep +{sweep_id}$", result.stdout, re.M)
    assert re.search(r"^share epochs +off: fit.epochs is not swept$", result.stdout, re.M)
    assert "val_loss ↓" in table[0]
    result = cli(api_url, "jobs", "--sweep", sweep_id, "--json")
    ids = {j["id"] for j in json.loads(result.stdout)["jobs"]}
    assert ids == {j["id"] for t in sweep["trials"] for j in t["jobs"]}
    result = cli(api_url, "jobs", "--sweep", sweep_id[:8])  # the prefix the tables show
    assert {ln.split()[0] for ln in result.stdout.splitlines()[1:]} == {i[:8] for i in ids}
    # Plain `jobs` lists the jobs submitted on their own; --all every job, trials included.
    result = cli(api_url, "jobs", "--limit", "500", "--json")
    listed = json.loads(result.stdout)["jobs"]
    assert not {j["id"] for j in listed} & ids and all(j["sweep_id"] is None for j in listed)
    result = cli(api_url, "jobs", "--all", "--json")
    assert ids | {j["id"] for j in listed} <= {j["id"] for j in
                                               json.loads(result.stdout)["jobs"]}
    result = cli(api_url, "open", sweep_id)
    assert result.returncode == 0 and result.stdout.strip() == sweep["mlflow"]["url"]


def test_cancelled_sweep_watch_exits_3(api_url, worker, tmp_path):
    result = cli(api_url, "sweep", write_spec(tmp_path, sweep_spec("cli-sweep-cancel",
                                                                    epochs=5000), "s.json"))
    assert result.returncode == 0, result.stderr
    sweep_id = first_id(result.stdout)
    result = cli(api_url, "cancel", sweep_id)
    assert result.returncode == 0 and "cancel requested for sweep cli-sweep-cancel" in result.stdout
    result = cli(api_url, "watch", sweep_id)
    assert result.returncode == 3, (result.stdout, result.stderr)
