"""The sweep's report as a student meets it: the lecture's question (batch size x activation x
epochs) on a small grid, its report.html read back from MLflow and checked against
GET /sweeps/{id}, then the MLflow UI in headless Chromium: a job's link lands in the
model-training view of its run, and the report renders inline with its figures.

The report code handles any grid; this one is 2 x 2 x 2 (tiny data, 2 or 4 epochs, the 2-epoch
trials recorded from the 4-epoch trainings) so CI trains four small networks.
"""

from __future__ import annotations

import json
import math
import re

import pytest

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
    body = tiny_sweep("report-grid", {"fit.batch_size": BATCHES,
                                      "model.hidden_activation": ACTS, "fit.epochs": EPOCHS})
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

    # The overview: batch size x activation at the largest epochs, the API's objectives.
    grid = data["overview"][0]
    assert (grid["rows"], grid["cols"]) == ("fit.batch_size", "model.hidden_activation")
    assert grid["row_values"] == BATCHES and grid["col_values"] == ACTS
    assert grid["fixed"] == {"fit.epochs": 4}
    for r, bs in enumerate(BATCHES):
        for c, act in enumerate(ACTS):
            assert grid["values"][r][c] == pytest.approx(objective[(bs, act, 4)])
            # ... and the table people read says the same.
            cell = re.search(rf"data-row='{bs}' data-col='{act}' data-v='([^']*)'", page)
            assert float(cell.group(1)) == pytest.approx(objective[(bs, act, 4)])

    # Importance ranks the three factors, largest first, logged on the parent run too.
    ranked = data["importance"]["ranked"]
    assert sorted(p for p, _ in ranked) == sorted(["fit.batch_size", "model.hidden_activation",
                                                   "fit.epochs"])
    shares = [v for _, v in ranked]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    short = {"fit.batch_size": "bs", "model.hidden_activation": "act", "fit.epochs": "ep"}
    for path, share in ranked:
        assert parent.data.metrics[f"importance.{short[path]}"] == pytest.approx(share)

    # The curves: one panel per activation, one line per batch size on each clock; the
    # 2-epoch trials are marks on their 4-epoch training's line, not lines of their own.
    curves = data["curves"]
    assert curves["line_by"] == "fit.batch_size" and "updates" in curves["clocks"]
    assert [p["fixed"] for p in curves["panels"]] == [
        {"model.hidden_activation": a} for a in ACTS]
    for panel in curves["panels"]:
        assert panel["lines"] == [str(b) for b in BATCHES]
        assert sorted(m[0] for m in panel["marks"]) == ["16", "4"]
    assert data["figures"] == ["curves", "factors", "importance", "overview"]
    assert page.count("data:image/png;base64,") == 4
    # Binary classification: chance is ln 2 on the loss.
    assert data["chance"] == pytest.approx(math.log(2), abs=1e-5)

    # Every trial in the table, each with a link to its run in the model-training view.
    for t in sweep["trials"]:
        row = re.search(rf"<tr class='[^']*' data-trial='{t['number']}'>(.*?)</tr>", page)
        run_id = t["jobs"][0]["mlflow_run_id"]
        assert f"/runs/{run_id}?workflowType=machine_learning" in row.group(1)
    # The description is short, renders as a table, and points at the report.
    note = parent.data.tags["mlflow.note.content"]
    assert f"/runs/{parent.info.run_id}/artifacts/report.html?workflowType=machine_learning" \
        in note
    assert "| bs | act | ep | val_loss |" in note


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
