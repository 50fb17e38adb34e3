"""/api/v1/docs in a real browser: Swagger UI, served by the API itself (no internet), submits
the prefilled lecture job with the bearer token and shows 202; without the token, 401.

The API runs over real HTTP with KERASYARD_API_TOKEN set, on the session's database and the
idle broker (conftest ``idle_settings``): the job is stored and queued, and no worker trains it.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from devstack import ApiServer
from service.api.openapi import JOB_EXAMPLE
from tests.browser import chromium, screenshot

pytestmark = pytest.mark.integration

TOKEN = "docs-browser-token-0123456789"
WAIT_S = 30


@pytest.fixture(scope="module")
def api(idle_settings):
    from service.api import create_app

    app = create_app(dataclasses.replace(idle_settings, api_token=TOKEN))
    with ApiServer(app, quiet=True) as server:
        yield server, app


def test_swagger_ui_authorizes_and_submits_the_prefilled_job(api):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server, app = api
    with chromium() as driver:
        wait = WebDriverWait(driver, WAIT_S)

        def shown(css):
            return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

        def click(css):
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, css))).click()

        def response_status(not_this: str | None = None) -> str:
            # The live response of the last Execute: its status cell, once it is a number.
            cell = f"{op} .live-responses-table tr.response .response-col_status"

            def status(d):
                found = d.find_elements(By.CSS_SELECTOR, cell)
                text = found[0].text.strip() if found else ""
                return text if text.isdigit() and text != not_this else False

            return wait.until(status)

        driver.get(f"{server.url}/api/v1/docs")
        # Every file the page loads came from the API (the browser has no network), and the
        # document rendered: the operation is there, under its tag.
        op = "#operations-jobs-createJob"
        shown(f"{op} .opblock-summary")
        assert all(e["name"].startswith(server.url)
                   for e in driver.execute_script(
                       "return performance.getEntriesByType('resource')"
                       ".map(e => ({name: e.name}))"))

        # Open POST /jobs: the deep link follows; the body is the lecture example.
        click(f"{op} .opblock-summary")
        wait.until(lambda d: d.current_url.endswith("#/jobs/createJob"))
        click(f"{op} .try-out__btn")
        body = shown(f"{op} textarea.body-param__text")
        assert json.loads(body.get_attribute("value")) == JOB_EXAMPLE

        # No token yet: the API refuses, and the page shows it.
        click(f"{op} button.execute")
        assert response_status() == "401"

        # Authorize with the bearer token, then Execute again.
        click("button.btn.authorize")
        shown(".modal-ux input#auth-bearer-value").send_keys(TOKEN)
        click(".modal-ux button.modal-btn.auth.authorize")
        click(".modal-ux button.btn-done")
        wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, ".modal-ux")))
        click(f"{op} button.execute")
        assert response_status(not_this="401") == "202"
        result = shown(f"{op} .live-responses-table tr.response")
        job = json.loads(result.find_element(By.CSS_SELECTOR, ".response-col_description pre")
                         .text)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", result)
        screenshot(driver, "swagger-post-job")

    assert job["name"] == JOB_EXAMPLE["name"] and job["status"] == "queued"
    stored = app.test_client().get(f"/api/v1/jobs/{job['id']}",
                                   headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert stored["status"] == "queued" and stored["spec"]["fit"]["epochs"] == \
        JOB_EXAMPLE["fit"]["epochs"]
