"""The one door between the worker and the service (service/worker_api.py): the import
contract forbids the worker every other service module, including ones added later; the
door documents what it offers; MLflow's terms stay on the worker's side."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import grimp
import tomllib

from service import worker_api

ROOT = Path(__file__).resolve().parents[2]
# What the worker may import from the service; everything else goes through the door.
ALLOWED = {"service", "service.config", "service.worker_api", "service.jobspec"}
ALLOWED_PACKAGES = {"service.jobspec"}  # with their submodules: the shared data contract


def _door_contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = [c for c in config["tool"]["importlinter"]["contracts"]
                 if c.get("id") == "worker-door"]
    assert len(contracts) == 1, "pyproject.toml has no import contract with id 'worker-door'"
    return contracts[0]


def _service_modules() -> set[str]:
    """Every module of the service package, read from the files (not from what imports
    what, so a module nobody imports yet counts too)."""
    out = set()
    for path in (ROOT / "service").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.add(".".join(parts))
    return out


def _allowed(module: str) -> bool:
    return module in ALLOWED or any(module.startswith(p + ".") for p in ALLOWED_PACKAGES)


def test_the_door_contract_forbids_every_other_service_module():
    contract = _door_contract()
    assert contract["type"] == "forbidden"
    assert contract.get("as_packages") is False, "each module on its own (see pyproject.toml)"
    assert contract.get("allow_indirect_imports") is True
    assert {"worker", "worker.**"} <= set(contract["source_modules"])

    graph = grimp.build_graph("service", cache_dir=None)

    def matching(expression: str) -> set[str]:
        if "*" in expression:
            return set(graph.find_matching_modules(expression))
        return {expression}

    forbidden = set().union(*(matching(e) for e in contract["forbidden_modules"]))
    let_through = set().union(*(matching(e.split("->")[1].strip())
                                for e in contract.get("ignore_imports", [])))
    modules = _service_modules()
    assert modules <= set(graph.modules), sorted(modules - set(graph.modules))
    not_forbidden = sorted(m for m in modules if not _allowed(m)
                           and (m not in forbidden or m in let_through))
    assert not not_forbidden, (
        f"the worker may import {not_forbidden} directly: the 'worker-door' contract in "
        "pyproject.toml must forbid every service module but the door (service.worker_api), "
        "service.config and service.jobspec; reach the module through the door instead")
    let_through_not_allowed = sorted(m for m in let_through if not _allowed(m))
    assert not let_through_not_allowed, (
        f"'worker-door' lets {let_through_not_allowed} through; add what the worker needs to "
        "service/worker_api.py instead")


def _public_functions():
    for name in worker_api.__all__:
        obj = getattr(worker_api, name)
        if inspect.isfunction(obj):
            yield name, obj


# Functions that catch what goes wrong (and say so in their docstring), or cannot fail.
RAISE_NOTHING = {"advance_sweep", "dispose_connections", "job_objective"}


def test_every_function_of_the_door_documents_args_returns_and_raises():
    missing = []
    for name, fn in _public_functions():
        doc = inspect.getdoc(fn) or ""
        sig = inspect.signature(fn)
        if sig.parameters and "Args:" not in doc:
            missing.append(f"{name}: Args")
        for p in sig.parameters:
            if "Args:" in doc and not re.search(rf"^\s+{p} \(", doc, re.M):
                missing.append(f"{name}: argument {p}")
        if sig.return_annotation not in (None, "None", inspect.Signature.empty) and \
                "Returns:" not in doc:
            missing.append(f"{name}: Returns")
        if name not in RAISE_NOTHING and "Raises:" not in doc:
            missing.append(f"{name}: Raises")
    assert not missing, missing
    assert {"claim", "finish", "trial_context", "advance_sweep", "publish_worker"} <= \
        {n for n, _ in _public_functions()}


def test_the_door_lists_its_groups():
    doc = worker_api.__doc__
    for group in ("Names", "The claim", "Fenced writes", "Sweeps", "Data", "presence"):
        assert group in doc, group


def test_mlflow_terms_live_on_the_worker_side():
    said = []
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        for term in ("mlflow.parentRunId", "mlflow.note", "MLFLOW_RUN_STATUS", "FINISHED",
                     "KILLED"):
            if term in text:
                said.append(f"{path.relative_to(ROOT)}: {term}")
    assert not said, said
    from worker.recording import tracking

    assert tracking.MLFLOW_RUN_STATUS[worker_api.JobStatus.pruned] == "FINISHED"
    assert set(tracking.MLFLOW_RUN_STATUS) == {s for s in worker_api.JobStatus if s.terminal}
