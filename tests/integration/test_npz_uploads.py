"""NumPy (.npz) uploads over the API: stored with their shapes, refused with a 422 naming the
array, trained on by the worker, and streamed from disk when the job's memory budget says so."""

from __future__ import annotations

import dataclasses
import io
import uuid

import numpy as np
import pytest
from sqlalchemy import func, select

from service.store.db import session_scope
from service.store.models import Dataset
from tests.helpers import tiny_spec

from .conftest import wait_terminal


def npz_bytes(n: int, features: int = 6, seed: int = 0, **extra) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y, **extra)
    return buf.getvalue()


def post_npz(client, content: bytes, name: str = "arrays"):
    return client.post(f"/api/v1/datasets?name={name}", data=content,
                       content_type="application/x-npz")


def npz_spec(name: str, dataset_id: str, epochs: int = 2, batch_size: int = 16) -> dict:
    spec = tiny_spec(name, epochs=epochs, dataset={"kind": "upload", "id": dataset_id})
    spec["fit"] = {"batch_size": batch_size, "epochs": epochs, "validation_split": 0.2,
                   "seed": 0}
    return spec


def n_datasets(settings) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(Dataset))


def test_npz_upload_shows_its_shapes(client):
    resp = post_npz(client, npz_bytes(40, 6))
    assert resp.status_code == 201, resp.get_json()
    ds = resp.get_json()
    assert ds["format"] == "npz" and ds["n_rows"] == 40 and ds["n_columns"] == 0
    assert ds["arrays"]["x"]["shape"] == [40, 6] and ds["arrays"]["x"]["dtype"] == "float32"
    assert ds["arrays"]["y"] == {"dtype": "int64", "n_unique": 2, "min": 0, "max": 1,
                                 "mapped": False}
    assert ds["use"] == {"dataset": {"kind": "upload", "id": ds["id"]}}
    assert client.get(f"/api/v1/datasets/{ds['id']}").get_json()["arrays"] == ds["arrays"]
    listed = {d["id"]: d for d in client.get("/api/v1/datasets").get_json()["datasets"]}
    assert listed[ds["id"]]["format"] == "npz"
    # as a multipart file named *.npz, whatever its part's content type
    resp = client.post("/api/v1/datasets", data={"file": (io.BytesIO(npz_bytes(10)), "d.npz")},
                       content_type="multipart/form-data")
    assert resp.status_code == 201 and resp.get_json()["format"] == "npz"


@pytest.mark.parametrize("content,loc,words", [
    (b"PK\x03\x04 not a zip at all", "file", "not a valid .npz"),
    (npz_bytes(10, w=np.zeros(10)), "file", "extra 'w'"),
    (None, "x", "object (pickled Python objects)"),
])
def test_refused_npz_is_a_422_and_stores_nothing(client, settings, content, loc, words):
    if content is None:
        buf = io.BytesIO()
        np.savez(buf, x=np.array([object(), 1], dtype=object), y=np.zeros(2))
        content = buf.getvalue()
    before = n_datasets(settings)
    resp = post_npz(client, content)
    assert resp.status_code == 422, resp.get_json()
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_dataset" and words in err["message"]
    assert err["details"][0]["loc"] == loc
    assert n_datasets(settings) == before


def test_a_target_other_than_y_is_refused(client):
    ds = post_npz(client, npz_bytes(40)).get_json()
    spec = npz_spec("npz-target", ds["id"])
    spec["dataset"]["target"] = "label"
    resp = client.post("/api/v1/jobs", json=spec)
    assert resp.status_code == 422
    detail = resp.get_json()["error"]["details"][0]
    assert detail["loc"] == "dataset.target" and "leave target out" in detail["msg"]


def test_a_job_on_an_npz_trains(client, worker):
    ds = post_npz(client, npz_bytes(100)).get_json()
    resp = client.post("/api/v1/jobs", json=npz_spec("npz-trains", ds["id"]))
    assert resp.status_code == 202, resp.get_json()
    job = wait_terminal(client, resp.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["plan"]["input_dim"] == 6 and job["plan"]["streamed"] is False
    assert job["progress"]["epoch"] == 2


def test_an_npz_over_the_memory_budget_streams(settings, workdir):
    """60,000 x 6 floats: about 10 MB held (float64 table, float32 copies, tensors), about
    5 MB streamed; an 8 MB budget on the API and on this test's own worker."""
    from devstack import WorkerProcess, worker_env
    from service.api import create_app

    queue = f"npz-{uuid.uuid4().hex[:6]}"
    low = dataclasses.replace(settings, max_job_memory_mb=8, default_queue=queue)
    client = create_app(low).test_client()
    ds = post_npz(client, npz_bytes(60_000)).get_json()
    resp = client.post("/api/v1/jobs", json=npz_spec("npz-streams", ds["id"], batch_size=512))
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    assert resp.get_json()["plan"]["streamed"] is True
    cache = workdir / "npz-cache"
    w = WorkerProcess(worker_env(settings, KERASYARD_MAX_JOB_MEMORY_MB="8",
                                 KERASYARD_DATA_CACHE_DIR=str(cache)),
                      workdir / "npz-worker.log", queues=queue, new_session=True)
    try:
        w.wait_ready()
        job = wait_terminal(client, job_id, timeout=300)
    finally:
        w.stop()
    assert job["status"] == "succeeded", (job["error"], w.text()[-3000:])
    hist = client.get(f"/api/v1/jobs/{job_id}/history").get_json()["epochs"]
    assert [e["epoch"] for e in hist] == [1, 2] and all("val_loss" in e for e in hist)
    assert sorted(p.name for p in (cache / ds["sha256"]).iterdir()) == ["x.npy", "y.npy"]
