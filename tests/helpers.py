"""Small helpers shared by the tests."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lecture_spec(**fit) -> dict:
    spec = json.loads((ROOT / "examples" / "lecture_mlp.json").read_text())
    spec["fit"].update(fit)
    return spec


def tiny_spec(name: str = "tiny", epochs: int = 3, **overrides) -> dict:
    """A few-millisecond job: 2-D circle set, one hidden layer."""
    spec = {
        "name": name,
        "experiment": "tests",
        "dataset": {"kind": "synthetic", "name": "circle", "n_samples": 64, "seed": 1},
        "model": {"layers": [{"type": "dense", "units": 4, "activation": "relu"},
                             {"type": "dense", "units": 1, "activation": "sigmoid"}]},
        "compile": {"loss": "binary_crossentropy", "optimizer": {"name": "adam",
                                                                 "learning_rate": 0.05},
                    "metrics": ["accuracy"]},
        "fit": {"batch_size": 16, "epochs": epochs, "seed": 0},
    }
    for key, value in overrides.items():
        spec[key] = copy.deepcopy(value)
    return spec


def diverging_spec(name: str = "diverge") -> dict:
    """A regression job whose SGD learning rate (1e12) sends the loss to inf/NaN at once."""
    return {
        "name": name, "experiment": "tests",
        "dataset": {"kind": "synthetic", "name": "linear", "n_samples": 64, "seed": 0},
        "model": {"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                             {"type": "dense", "units": 1}]},
        "compile": {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 1e12},
                    "metrics": ["mae"]},
        "fit": {"batch_size": 8, "epochs": 50},
    }


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def ended_run(mlflow_client, run_id: str, timeout: float = 60):
    """A job's MLflow run once it has ended. The job's row ends first: the worker sets the
    run's end status only after the job's final write went through (so a run is never
    relabelled), so right after the job ends its run may still read RUNNING for a moment."""
    def ended():
        run = mlflow_client.get_run(run_id)
        return run if run.info.status != "RUNNING" else None

    return wait_for(ended, timeout, 0.1, f"MLflow run {run_id} to end")


def sqlite_api_client(folder: Path, api_token: str | None = None):
    """A Flask test client of the API on a throwaway SQLite database in ``folder``, with an
    in-memory broker: for the unit tests of what the API answers (nothing is trained)."""
    import dataclasses

    from service.api import create_app
    from service.config import Settings
    from service.migrate import upgrade

    settings = dataclasses.replace(
        Settings.from_env(), data_dir=folder, database_url=f"sqlite:///{folder / 'k.db'}",
        broker_url="memory://", api_token=api_token)
    upgrade(settings.database_url)
    return create_app(settings).test_client()


SEQUENCES_ID = "the-id-of-sequences.npz"  # the placeholder examples/sequence_lstm.json holds


def example_module(name: str):
    """examples/<name>.py, imported (examples/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sequences_info(dataset_id: str):
    """What the door knows of sequences.npz once uploaded (examples/make_sequences.py writes
    it): the file profiled as ``POST /api/v1/datasets`` profiles it."""
    import io

    import numpy as np

    from service.uploads.npz import npz_info, profile

    if dataset_id != SEQUENCES_ID:
        return None
    x, y = example_module("make_sequences").make()
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    return npz_info(profile(buf.getvalue(), 10 * 1024 * 1024), None)
