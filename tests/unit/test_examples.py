"""Every shipped example is a valid spec (the README points people at them)."""

from __future__ import annotations

import json

import pytest
import yaml

from service.jobspec import validate_job
from service.jobspec.sweep_checks import validate_sweep
from tests.helpers import ROOT

EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".json", ".yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path):
    data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(
        path.read_text())
    if "base" in data:  # a sweep
        _, sweep_plan = validate_sweep(data)
        assert sweep_plan.total > 0
        return
    _, plan = validate_job(data)
    assert plan.total_params > 0


def test_lecture_example_is_the_contract_document():
    data = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    _, plan = validate_job(data)
    assert (plan.steps_per_epoch, plan.total_updates, plan.total_params) == (40, 40_000, 5_374)
