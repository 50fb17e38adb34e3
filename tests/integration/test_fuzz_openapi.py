"""A schemathesis run over the OpenAPI document: the API returns what it declares, for any input.

schemathesis's own engine (what ``schemathesis run`` drives) runs in-process against the Flask
app over WSGI: every operation, every phase (examples, coverage, fuzzing, stateful) and every
check it has, each enabled. The app's broker is the idle one (conftest ``idle_settings``) and
its database one of this module's own (``fuzz_settings``): the valid jobs and sweeps the run
submits are queued and never trained, and no later test's background round finds them. Generation is
deterministic with fixed seeds (two, :data:`SEEDS`), so a failure in CI reproduces here.

The test fails on any failed check (a 5xx, a status code, content type, header or body the
document does not declare for the operation, schema-valid data rejected, invalid data
accepted, ...), on any error of the engine, and when fewer than ``MIN_CASES`` cases ran.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import events, from_schema  # noqa: E402
from schemathesis.engine.statistic import Statistic  # noqa: E402

pytestmark = pytest.mark.integration

# Two seeds in CI: each generates inputs the other does not. The first runs every phase; the
# coverage phase's cases follow from the document alone (~3,500 of them, most of a run's time),
# so the next seeds skip it and spend a third of that time on the examples, fuzzing and stateful
# phases with more examples (LATER_EXAMPLES). Other seeds locally:
# KERASYARD_FUZZ_SEEDS=1,2,3 (comma-separated; the first runs the coverage phase).
SEEDS = tuple(int(s) for s in os.environ.get("KERASYARD_FUZZ_SEEDS", "20240611,7").split(","))
LATER_EXAMPLES = 60
MIN_CASES = 1000  # with the coverage phase
MIN_CASES_WITHOUT_COVERAGE = 500

CONFIG = """
seed = 20240611
max-failures = 100

[generation]
max-examples = 20
deterministic = true
# Every mode (positive and negative), NUL characters included (allow-x00 defaults to true).

[checks]
# Every built-in check: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance, response_headers_conformance, positive_data_acceptance,
# negative_data_rejection, use_after_free, ensure_resource_availability,
# missing_required_header, ignored_auth, object_level_authorization, unsupported_method,
# allow_header_conformance.
enabled = true

# positive_data_acceptance: a request that matches the document must not be rejected. Each
# exception below is a rule no JSON Schema can state; its status is declared in the document.

# A job spec is checked across its fields after its schema (spec/checks.py: the loss against
# the last layer's activation and units, an optimizer's options, the dataset's shape against
# the model's input, batch size against the training samples, the deployment's caps on epochs
# and memory, tag keys MLflow accepts, ...): a schema-valid spec may be 422 invalid_spec.
[[operations]]
include-operation-id = "createJob"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409",
                                                     "422", "429", "5xx"]

# The same for a sweep, whose parameters must also be paths into its base spec with values
# that make a valid job there (service/jobspec/sweep_checks.py).
[[operations]]
include-operation-id = "createSweep"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409",
                                                     "422", "429", "5xx"]

# The body is declared as a string (text/csv) or a binary file, with what a pattern can say
# (three lines that are not blank): that it is a UTF-8 CSV with a header naming each column once
# and two rows of as many fields is the 422 invalid_dataset the document declares; so is an
# application/x-npz body that is not an .npz of arrays x and y.
[[operations]]
include-operation-id = "uploadDataset"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409",
                                                     "422", "429", "5xx"]

# A binary body: that it is a .keras file of Keras's built-in layers, with no code, is the 422
# invalid_model the document declares.
[[operations]]
include-operation-id = "uploadModel"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409",
                                                     "422", "429", "5xx"]
"""


def _run(app, config_text: str, url: str | None = None) -> tuple[Statistic, str]:
    """schemathesis's engine over the app's document (in-process over WSGI, or over HTTP at
    ``url``); the statistics and a one-line account. Fails the test on any failed check,
    engine error or errored case."""
    config = SchemathesisConfig.from_str(config_text)
    if url:
        schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", config=config)
    else:
        schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)
    stat = Statistic()
    errors: list[str] = []
    phases: dict[str, str] = {}
    stop = None
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            stat.on_scenario_finished(event.recorder)
        elif isinstance(event, events.PhaseFinished):
            phases[event.phase.name.value] = event.status.value
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            stop = event.stop_reason.value
    elapsed = time.monotonic() - started
    report = [f"== {label}\n" + group.format(index=None, curl=None, config=schema.config.output)
              for label, groups in stat.failures.items() for group in groups.values()]
    line = (f"schemathesis {schemathesis.__version__}: {stat.total_cases} cases in "
            f"{elapsed:.0f}s (stopped: {stop}); phases {phases}; {len(report)} failures, "
            f"{stat.errored_cases} errored cases, {len(errors)} errors")
    assert not errors, line + "\n" + "\n".join(errors)
    assert not report, line + f"\n{len(report)} failures:\n" + "\n".join(report)
    assert stat.errored_cases == 0, line
    assert stop == "completed", line
    return stat, line


@pytest.fixture(scope="module")
def fuzz_settings(idle_settings):
    """The idle broker and a database of this module's own, dropped at the end: the thousands
    of jobs and sweeps a run stores stay out of the session's database."""
    import dataclasses

    from .conftest import migrated_database

    with migrated_database("kerasyard_fuzz") as url:
        yield dataclasses.replace(idle_settings, database_url=url)


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings):
    from service.api import create_app

    return create_app(fuzz_settings)


@pytest.fixture()
def fuzz_client(fuzz_app):
    return fuzz_app.test_client()


def _seeded(config_text: str, seed: int, coverage: bool = True) -> str:
    text = config_text.replace("seed = 20240611", f"seed = {seed}")
    if coverage:
        return text
    return (text.replace("max-examples = 20", f"max-examples = {LATER_EXAMPLES}")
            + "\n[phases.coverage]\nenabled = false\n")


@pytest.mark.parametrize("seed", SEEDS)
def test_schemathesis_run_finds_nothing(fuzz_app, capsys, seed):
    coverage = seed == SEEDS[0]
    stat, line = _run(fuzz_app, _seeded(CONFIG, seed, coverage))
    with capsys.disabled():
        print(f"\n{line} (seed {seed})")
    assert stat.total_cases >= (MIN_CASES if coverage else MIN_CASES_WITHOUT_COVERAGE), line


TOKEN = "fuzz-token-0123456789abcdef"
# With KERASYARD_API_TOKEN set the document requires the bearer token on every operation but
# the public ones, and ignored_auth can do its work: it sends each request again without the
# token and with a wrong one, and fails unless the API answers 401. A shorter run: the first
# one covers the inputs, so fewer examples and no coverage phase (its cases are fixed by the
# schema, not by max-examples: ~4,000 of them); every check still on. Over HTTP on loopback:
# schemathesis 4.32's ignored_auth probe passes requests' max_redirects to werkzeug's test
# client, which refuses it (TypeError), so the WSGI transport cannot run that check.
AUTH_CONFIG = CONFIG.replace("max-examples = 20", "max-examples = 10") + f"""
[phases.coverage]
enabled = false

[auth.openapi.bearer]
bearer = "{TOKEN}"
"""


def test_schemathesis_run_with_a_token_finds_no_open_door(fuzz_settings, capsys):
    import dataclasses

    from werkzeug.serving import make_server

    from service.api import create_app

    app = create_app(dataclasses.replace(fuzz_settings, api_token=TOKEN))
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["security"] == [{"bearer": []}]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        stat, line = _run(app, AUTH_CONFIG, url=f"http://127.0.0.1:{server.port}")
    finally:
        server.shutdown()
        thread.join(10)
    with capsys.disabled():
        print(f"\n{line} (with a token)")
    assert stat.total_cases > 0, line


# NUL characters: PostgreSQL's text and JSONB cannot hold one, so each was a 500 before. The
# run above sends few of them (its seed decides); these pin each place one can come in.
NUL_CASES = [
    ("get", "/api/v1/jobs/{job_id}", "/api/v1/jobs/a%00b", {}, 404),
    ("get", "/api/v1/jobs/{job_id}/history", "/api/v1/jobs/a%00b/history", {}, 404),
    ("post", "/api/v1/jobs/{job_id}/cancel", "/api/v1/jobs/a%00b/cancel", {}, 404),
    ("get", "/api/v1/sweeps/{sweep_id}", "/api/v1/sweeps/a%00b", {}, 404),
    ("post", "/api/v1/sweeps/{sweep_id}/cancel", "/api/v1/sweeps/a%00b/cancel", {}, 404),
    ("post", "/api/v1/jobs/{job_id}/pause", "/api/v1/jobs/a%00b/pause", {}, 404),
    ("post", "/api/v1/sweeps/{sweep_id}/resume", "/api/v1/sweeps/a%00b/resume", {}, 404),
    ("get", "/api/v1/datasets/{dataset_id}", "/api/v1/datasets/a%00b", {}, 404),
    ("get", "/api/v1/models/{model_id}", "/api/v1/models/a%00b", {}, 404),
    ("get", "/api/v1/jobs", "/api/v1/jobs?experiment=a%00b", {}, 400),
    ("get", "/api/v1/jobs", "/api/v1/jobs?sweep_id=%00", {}, 400),
    ("get", "/api/v1/sweeps", "/api/v1/sweeps?cursor=%00", {}, 400),
    ("post", "/api/v1/jobs", "/api/v1/jobs", {"json": "name"}, 400),
    ("post", "/api/v1/jobs", "/api/v1/jobs", {"json": "tag-key"}, 400),
    ("post", "/api/v1/jobs", "/api/v1/jobs", {"yaml": "name"}, 400),
    ("post", "/api/v1/sweeps", "/api/v1/sweeps", {"json": "sweep"}, 400),
    ("post", "/api/v1/datasets", "/api/v1/datasets?name=a%00", {"csv": "a,b\n1,2\n3,4\n"}, 400),
    ("post", "/api/v1/datasets", "/api/v1/datasets", {"csv": "a\x00,b\n1,2\n3,4\n"}, 422),
    ("post", "/api/v1/datasets", "/api/v1/datasets", {"form-name": "a\x00"}, 400),
    # ...also where the query's name is the one kept (seed 7 found it accepted)
    ("post", "/api/v1/datasets", "/api/v1/datasets?name=q", {"form-name": "a\x00"}, 400),
    ("post", "/api/v1/datasets", "/api/v1/datasets", {"filename": "d\x00.csv"}, 201),
]


@pytest.mark.parametrize("method,template,url,what,status", NUL_CASES,
                         ids=[f"{c[0]} {c[2]} {sorted(c[3])}" for c in NUL_CASES])
def test_a_nul_character_is_refused_as_declared(fuzz_client, method, template, url, what,
                                                status):
    import io

    import yaml

    from tests.helpers import tiny_spec

    csv_text = "x,label\n1,0\n2,1\n3,0\n"
    kw: dict = {}
    if "json" in what or "yaml" in what:
        spec = tiny_spec("nul\x00" if "name" in what.values() else "nul")
        if what.get("json") == "tag-key":
            spec["tags"] = {"k\x00": "v"}
        if what.get("json") == "sweep":
            spec = {"name": "s\x00", "base": tiny_spec("nul"),
                    "parameters": {"fit.batch_size": [8]}}
        kw = ({"json": spec} if "json" in what else
              {"data": yaml.safe_dump(spec), "content_type": "application/yaml"})
    elif "csv" in what:
        kw = {"data": what["csv"], "content_type": "text/csv"}
    elif "form-name" in what:
        kw = {"data": {"file": (io.BytesIO(csv_text.encode()), "d.csv"),
                       "name": what["form-name"]}, "content_type": "multipart/form-data"}
    elif "filename" in what:
        kw = {"data": {"file": (io.BytesIO(csv_text.encode()), what["filename"])},
              "content_type": "multipart/form-data"}
    resp = getattr(fuzz_client, method)(url, **kw)
    assert resp.status_code == status, resp.get_data()[:500]
    doc = fuzz_client.get("/api/v1/openapi.json").get_json()
    assert str(status) in doc["paths"][template][method]["responses"]
    assert resp.is_json
    if status >= 400:
        assert "NUL" in resp.get_json()["error"]["message"]
