"""The sweep's report as a student meets it: the lecture's question (batch size x activation x
epochs) on a small grid with two seeds, its report.html read back from MLflow and checked
against GET /sweeps/{id}, the best configuration's model in the MLflow Model Registry with the
alias ``best``, then headless Chromium: the report's headline read as a person reads it and held
against the API, a job's link landing in the model-training view of its run, and the report
inline with its figures.

The report code handles any grid; this one is 2 x 2 x 2 x 2 seeds (tiny data, 2 or 4 epochs,
the 2-epoch trials recorded from the 4-epoch trainings, the two activations of a batch size
packed) so CI trains four small packed networks.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from urllib.parse import quote

import pytest

from service.jobspec.sweep import trial_name
from tests.browser import chromium, screenshot
from tests.helpers import ended_run

from .test_sweeps import tiny_sweep, wait_sweep

pytestmark = pytest.mark.integration

BATCHES, ACTS, EPOCHS = [4, 16], ["relu", "tanh"], [2, 4]
REPORT_BLOCK = re.compile(r"<script type='application/json' id='kerasyard-report'>(.*?)</script>",
                          re.S)


@pytest.fixture(scope="module")
def lecture_sweep(worker, app):
    client = app.test_client()
    body = tiny_sweep("report: grid", {"fit.batch_size": BATCHES,
                                       "model.hidden_activation": ACTS, "fit.epochs": EPOCHS},
                      repeats=2)
    resp = client.post("/api/v1/sweeps", json=body)
    assert resp.status_code == 202, resp.get_json()
    sweep = wait_sweep(client, resp.get_json()["id"])
    assert sweep["status"] == "succeeded" and sweep["report"]["state"] == "done", sweep
    return sweep


def _report(mlflow_client, run_id: str, tmp_path) -> tuple[str, dict]:
    page = open(mlflow_client.download_artifacts(run_id, "report.html", str(tmp_path))).read()
    return page, json.loads(REPORT_BLOCK.search(page).group(1).replace("<\\/", "</"))


def test_report_answers_the_lecture_question(lecture_sweep, mlflow_client, tmp_path):
    sweep = lecture_sweep
    parent = ended_run(mlflow_client, sweep["mlflow"]["run_id"])
    page, data = _report(mlflow_client, parent.info.run_id, tmp_path)
    objective = {(t["params"]["fit.batch_size"], t["params"]["model.hidden_activation"],
                  t["params"]["fit.epochs"]): t["objective"] for t in sweep["trials"]}
    assert len(objective) == 8 and None not in objective.values()
    assert all(len(t["objective_values"]) == 2 for t in sweep["trials"])

    # The best is the best mean over the seeds, and the headline says so.
    best = sweep["best"]
    means = {t["name"]: statistics.fmean(t["objective_values"]) for t in sweep["trials"]}
    assert best["name"] == min(means, key=means.get)
    assert best["objective"] == pytest.approx(means[best["name"]])
    head = data["headline"]
    assert (head["name"], head["n_seeds"]) == (best["name"], 2)
    assert head["objective"] == pytest.approx(best["objective"])
    assert head["text"].startswith(f"Best: {best['name']}, val_loss at the last epoch "
                                   f"{best['objective']:.4g} ± ")
    assert "(mean ± sd over 2 seeds)" in head["text"]

    # The overview: batch size x activation at the best trial's epochs, the API's objectives,
    # the best trial's cell starred there and in the grids with epochs.
    best_bs, best_act, best_ep = (best["params"][k] for k in (
        "fit.batch_size", "model.hidden_activation", "fit.epochs"))
    grid = data["overview"][0]
    assert (grid["rows"], grid["cols"]) == ("fit.batch_size", "model.hidden_activation")
    assert grid["row_values"] == BATCHES and grid["col_values"] == ACTS
    assert grid["fixed"] == {"fit.epochs": best_ep} and grid["seeds"] == 2
    assert grid["best_cell"] == [BATCHES.index(best_bs), ACTS.index(best_act)]
    for r, bs in enumerate(BATCHES):
        for c, act in enumerate(ACTS):
            assert grid["values"][r][c] == pytest.approx(objective[(bs, act, best_ep)])
            # ... and the table people read says the same.
            cell = re.search(rf"data-row='{bs}' data-col='{act}' data-v='([^']*)'", page)
            assert float(cell.group(1)) == pytest.approx(objective[(bs, act, best_ep)])
    for g in data["overview"][1:]:
        assert g["cols"] == "fit.epochs" and g["best_cell"][1] == EPOCHS.index(best_ep)

    # Importance: main effects and interactions add up to 1, logged on the parent run too.
    imp = data["importance"]
    assert sorted(p for p, _ in imp["main"]) == sorted(
        ["fit.batch_size", "model.hidden_activation", "fit.epochs"])
    shares = [v for _, v in imp["main"]]
    assert shares == sorted(shares, reverse=True)
    assert sum(shares) + imp["interactions"] == pytest.approx(1.0)
    short = {"fit.batch_size": "bs", "model.hidden_activation": "act", "fit.epochs": "ep"}
    for path, share in imp["main"]:
        assert parent.data.metrics[f"importance.{short[path]}"] == pytest.approx(share)
    assert parent.data.metrics["importance.interactions"] == pytest.approx(imp["interactions"])

    # The curves: one panel per activation, one line per batch size on each clock, each with
    # its best epoch; the 2-epoch trials are marks on their 4-epoch training's line.
    curves = data["curves"]
    assert curves["line_by"] == "fit.batch_size" and "updates" in curves["clocks"]
    assert [p["fixed"] for p in curves["panels"]] == [
        {"model.hidden_activation": a} for a in ACTS]
    for panel in curves["panels"]:
        assert panel["lines"] == [str(b) for b in BATCHES]
        assert sorted(m[0] for m in panel["marks"]) == ["16", "4"]
        assert all(1 <= epoch <= 4 for _, epoch, _, _ in panel["best_epochs"])
    assert data["figures"] == ["curves", "factors", "importance", "overview"]
    assert page.count("data:image/png;base64,") == 4
    # Binary classification: chance is ln 2 on the loss, labelled so.
    assert data["chance"] == pytest.approx(math.log(2), abs=1e-5)
    assert data["chance_label"] == "chance: ln(2) = 0.693, uniform guess over 2 classes"

    # Every trial in the table, each with a link to its runs in the model-training view.
    for t in sweep["trials"]:
        row = re.search(rf"<tr class='[^']*' data-trial='{t['number']}'>(.*?)</tr>", page)
        for j in t["jobs"]:
            assert f"/runs/{j['mlflow_run_id']}?workflowType=machine_learning" in row.group(1)
    # The description is short, renders as a table, and points at the report.
    note = parent.data.tags["mlflow.note.content"]
    assert f"/runs/{parent.info.run_id}/artifacts/report.html?workflowType=machine_learning" \
        in note
    assert head["text"] in note
    assert "| bs | act | ep | val_loss |" in note


def test_the_best_model_is_registered_with_alias_best(lecture_sweep, mlflow_client, settings):
    """The best configuration's model (its best seed's) is a version of the registered model
    named after the sweep, with the alias ``best``; the report, the parent run and
    GET /sweeps/{id} link it; writing the report again registers nothing new."""
    from service.store.db import session_scope
    from service.store.models import Job, Sweep
    from service.sweeps.trials import best_trial, trials_of
    from worker.recording import tracking
    from worker.sweeps.report import registry

    sweep = lecture_sweep
    model = sweep["report"]["registered_model"]
    assert model["name"] == "report - grid"  # ':' is not allowed in a registered model's name
    version = mlflow_client.get_model_version_by_alias(model["name"], "best")
    assert (version.version, version.run_id) == (model["version"], model["run_id"])
    best = next(t for t in sweep["trials"] if t["number"] == sweep["best"]["number"])
    seed = min(best["jobs"], key=lambda j: j["objective"])
    assert version.run_id == seed["mlflow_run_id"]
    # The version's source is the seed's logged model (the open-source registry keeps the
    # model's id in the source URI only).
    assert version.source == f"models:/{model['model_id']}"
    logged = mlflow_client.get_logged_model(model["model_id"])
    assert logged.source_run_id == version.run_id and logged.name == "model"
    assert version.tags["kerasyard.sweep_id"] == sweep["id"]
    assert version.tags["kerasyard.trial"] == best["name"]
    assert model["url"] == (f"{settings.mlflow_ui_url}/#/models/{quote(model['name'], safe='')}"
                            f"/versions/{model['version']}?workflowType=machine_learning")
    parent = mlflow_client.get_run(sweep["mlflow"]["run_id"])
    assert parent.data.tags["kerasyard.registered_model"] == model["name"]
    assert parent.data.tags["kerasyard.registered_model_url"] == model["url"]

    # Again (a report written a second time after a crash): the same version, no new one.
    with session_scope(settings.database_url) as s:
        row = s.get(Sweep, sweep["id"])
        jobs = list(s.query(Job).filter(Job.sweep_id == sweep["id"]))
        again, why = registry.register_best(
            tracking.client(settings.mlflow_tracking_uri), settings, row, jobs,
            best_trial(row, trials_of(row, jobs)))
    assert why is None and again["version"] == model["version"]
    versions = mlflow_client.search_model_versions(f"name = '{model['name']}'")
    assert [v.version for v in versions] == [model["version"]]


def test_report_headline_in_a_browser_matches_the_api(lecture_sweep, client, mlflow_client,
                                                      tmp_path):
    """The headline as a reader sees it in Chromium names the API's best configuration and its
    objective (mean ± sd over its seeds), the starred heatmap cell is that configuration, and
    the model link opens its version in the MLflow UI, alias ``best``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sweep = client.get(f"/api/v1/sweeps/{lecture_sweep['id']}").get_json()
    best = sweep["best"]
    report = mlflow_client.download_artifacts(sweep["mlflow"]["run_id"], "report.html",
                                              str(tmp_path))
    with chromium() as driver:
        driver.get(f"file://{report}")
        text = driver.find_element(By.ID, "headline").text
        sd = f" ± {best['objective_std']:.2g}" if best["objective_std"] is not None else ""
        assert text.startswith(f"Best: {best['name']}, val_loss at the last epoch "
                               f"{best['objective']:.4g}{sd} ("), text
        # The name the headline gives is the best params' ("bs=4 act=tanh ep=4").
        assert trial_name(best["params"]) == best["name"]
        if best.get("n_seeds"):
            assert f"mean ± sd over {best['n_seeds']} seeds" in text
        if best.get("runner_up"):
            assert f"runner-up {best['runner_up']['name']}" in text
            assert ("within noise: add repeats" in text) == (best["clear"] is False)
        cell = driver.find_element(By.CSS_SELECTOR, "table.grid td[data-best='1']")
        assert (cell.get_attribute("data-row"), cell.get_attribute("data-col")) == (
            str(best["params"]["fit.batch_size"]), best["params"]["model.hidden_activation"])
        assert cell.text.startswith("★ ")
        screenshot(driver, "sweep-report-headline")

        link = driver.find_element(By.ID, "model-link").get_attribute("href")
        assert link == sweep["report"]["registered_model"]["url"]
        driver.get(link)
        # The version's page: "Version 1", and among its aliases "@ best".
        version = sweep["report"]["registered_model"]["version"]
        WebDriverWait(driver, 60).until(
            lambda d: f"Version {version}" in d.find_element(By.TAG_NAME, "body").text
            and "@ best" in d.find_element(By.TAG_NAME, "body").text)
        screenshot(driver, "registered-model-best")


def test_mlflow_ui_opens_runs_in_model_training_and_shows_the_report(lecture_sweep, client,
                                                                     mlflow_client, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    sweep = lecture_sweep
    job_id = sweep["trials"][0]["jobs"][0]["id"]
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    url, exp_id = job["mlflow"]["url"], job["mlflow"]["experiment_id"]
    assert url.endswith("?workflowType=machine_learning")
    experiment = mlflow_client.get_experiment(exp_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    run_name = mlflow_client.get_run(job["mlflow"]["run_id"]).info.run_name

    with chromium() as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        # The model-training sidebar: the experiment's Runs and Models, the model registry;
        # none of GenAI's Judges, Prompts or Evaluation runs.
        wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, f"nav a[href^='#/experiments/{exp_id}/runs']")))
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), run_name))
        nav = driver.find_element(By.TAG_NAME, "nav")
        hrefs = [a.get_attribute("href") or "" for a in nav.find_elements(By.TAG_NAME, "a")]
        assert any(h.endswith("#/models") for h in hrefs), hrefs
        for genai in ("/judges", "/prompts", "/evaluation-runs"):
            assert not any(genai in h for h in hrefs), hrefs
        assert "Model metrics" in driver.find_element(By.TAG_NAME, "body").text
        screenshot(driver, "mlflow-run")

        # The sweep's parent run: its description is a table and a link to the report.
        parent = sweep["mlflow"]
        driver.get(parent["url"])
        link = wait.until(EC.presence_of_element_located(
            (By.XPATH, "//a[contains(@href, 'report.html') and "
                       "contains(normalize-space(), 'Open the report')]")))
        assert "workflowType=machine_learning" in link.get_attribute("href")
        headers = [th.get_attribute("textContent").strip()
                   for th in driver.find_elements(By.CSS_SELECTOR, "table th")]
        assert {"bs", "act", "ep", "val_loss"} <= set(headers), headers
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
        screenshot(driver, "sweep-parent-run")

        # The report, inline in MLflow's artifact view (a sandboxed iframe).
        driver.get(f"{url.split('/#/')[0]}/#/experiments/{parent['experiment_id']}/runs/"
                   f"{parent['run_id']}/artifacts/report.html?workflowType=machine_learning")
        frame = wait.until(EC.presence_of_element_located((By.TAG_NAME, "iframe")))
        driver.switch_to.frame(frame)
        wait.until(lambda d: d.execute_script(
            "return document.images.length === 4 && Array.from(document.images).every("
            "i => i.complete && i.naturalWidth > 0)"))
        figures = driver.execute_script(
            "return Array.from(document.images).map(i => [i.dataset.figure, i.naturalWidth])")
        assert sorted(f for f, _ in figures) == ["curves", "factors", "importance", "overview"]
        assert driver.find_element(By.ID, "kerasyard-report")
        driver.switch_to.default_content()
        screenshot(driver, "sweep-report-in-mlflow")

        # The page on its own, full size (the README shows this one).
        report = mlflow_client.download_artifacts(parent["run_id"], "report.html",
                                                  str(tmp_path))
        driver.set_window_size(1400, 2400)
        driver.get(f"file://{report}")
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
        screenshot(driver, "sweep-report")
