"""A small Python client for the kerasyard REST API (standard library only).

    from kerasyard import Client

    api = Client("http://127.0.0.1:8000")
    job = api.submit_job(spec)
    job = api.wait_job(job["id"], on_update=lambda j: print(j["progress"]["epoch"]))

Every API error raises :class:`ApiError` with the API's ``status``, ``code``, ``message`` and
``details`` (a list of ``{"loc", "msg"}``). A service that cannot be reached at all raises
:class:`ServiceUnreachable`. Both live in :mod:`kerasyard.errors`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ApiError
from .pausing import Pausing
from .polling import pages, wait_until_ended
from .transport import Transport, quote

JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "pruned"})
SWEEP_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# What ends a wait: an end, or a pause (nothing moves until someone resumes it).
JOB_WAIT_ENDS = JOB_TERMINAL | {"paused"}
SWEEP_WAIT_ENDS = SWEEP_TERMINAL | {"paused"}


class Client(Pausing, Transport):
    """The kerasyard REST API (``/api/v1``) as Python methods returning the API's JSON.

    Every method makes one or more HTTP calls and raises :class:`ApiError` when the API answers
    with an error (401 without the right token, 404 for an unknown id, 409 for an id prefix that
    names several rows, ...) and :class:`ServiceUnreachable` when nothing answers.

    Args:
        base_url: where the service listens; default ``$KERASYARD_URL`` or
            ``http://127.0.0.1:8000``. A trailing ``/api/v1`` is accepted, and ``http://`` is
            assumed when no scheme is given.
        token: bearer token when the server sets ``KERASYARD_API_TOKEN``; default
            ``$KERASYARD_API_TOKEN``.
        timeout: seconds per HTTP request.

    Example:
        >>> api = Client("http://gpu-box:8000", token="...")
        >>> api.health()["status"]
        'ok'
    """

    # --- jobs ---------------------------------------------------------------------------------

    def submit_job(self, spec: dict) -> dict:
        """Validate, store and queue a job.

        Args:
            spec: the job spec (the same fields as a ``kerasyard submit`` file).

        Returns:
            dict: the job, status ``queued``, with its ``id`` and ``plan`` (samples, batch size,
            steps per epoch, total updates, parameters).

        Raises:
            ApiError: 422 ``invalid_spec`` with one detail per wrong field, 400 for a body
                that is not a JSON object.
            ServiceUnreachable: no answer from the service.

        Example:
            >>> job = api.submit_job(json.load(open("examples/lecture_mlp.json")))
            >>> job["plan"]["total_updates"]
            400
        """
        return self.request("POST", "/jobs", json_body=spec)

    def get_job(self, job_id: str) -> dict:
        """One job, its status, progress and (once ended) summary or error.

        Args:
            job_id: the full id or a unique prefix of at least 4 characters.

        Returns:
            dict: the job as ``GET /api/v1/jobs/{id}`` returns it.

        Raises:
            ApiError: 404 ``not_found``; 409 ``ambiguous_id`` when the prefix names several jobs.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", f"/jobs/{quote(job_id)}")

    def list_jobs(self, status: str | None = None, sweep_id: str | None = None,
                  experiment: str | None = None, limit: int | None = None,
                  cursor: str | None = None, standalone: bool | None = None) -> dict:
        """One page of jobs, newest first.

        Args:
            status: only jobs in this status (``queued``, ``running``, ``succeeded``, ...).
            sweep_id: only the trials of this sweep.
            experiment: only jobs of this MLflow experiment.
            standalone: True, only the jobs submitted on their own (no sweep's trials);
                False, only sweeps' trials; None, both.
            limit: the page size (the server's default 50, at most 500).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            dict: ``{"jobs": [...], "next_cursor": str | None}``; no ``next_cursor`` on the
            last page.

        Raises:
            ApiError: 400 for an unknown status, a limit out of range or a cursor that is not
                one the server gave.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", "/jobs", params={
            "status": status, "sweep_id": sweep_id, "experiment": experiment, "limit": limit,
            "cursor": cursor,
            "standalone": None if standalone is None else str(bool(standalone)).lower()})

    def iter_jobs(self, status: str | None = None, sweep_id: str | None = None,
                  experiment: str | None = None, page_size: int = 200,
                  standalone: bool | None = None) -> Iterator[dict]:
        """Every matching job, newest first, following ``next_cursor`` page by page.

        Args:
            status, sweep_id, experiment, standalone: the filters of :meth:`list_jobs`.
            page_size: jobs per request.

        Returns:
            Iterator[dict]: the jobs; each page is fetched when the previous one is used up.

        Raises:
            ApiError: as :meth:`list_jobs`, while iterating.
            ServiceUnreachable: no answer from the service, while iterating.
        """
        return pages(self.list_jobs, "jobs", page_size, status=status, sweep_id=sweep_id,
                     experiment=experiment, standalone=standalone)

    def job_history(self, job_id: str) -> dict:
        """A job's per-epoch metrics, as far as it has got.

        Args:
            job_id: the full id or a unique prefix.

        Returns:
            dict: ``{"job_id", "status", "epochs": [{"epoch": 1, "loss": ..., ...}, ...]}``.

        Raises:
            ApiError: 404 ``not_found``; 409 ``ambiguous_id``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", f"/jobs/{quote(job_id)}/history")

    def cancel_job(self, job_id: str) -> dict:
        """Ask a job to stop. A queued job is cancelled at once; a running one stops at its next
        epoch boundary (cooperative), so the answer may still say ``running``.

        Args:
            job_id: the full id or a unique prefix.

        Returns:
            dict: the job after the request.

        Raises:
            ApiError: 409 ``illegal_state`` once the job has ended; 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", f"/jobs/{quote(job_id)}/cancel")

    def wait_job(self, job_id: str, poll: float = 0.5, timeout: float | None = None,
                 on_update: Callable[[dict], None] | None = None,
                 unreachable_grace: float = 30.0) -> dict:
        """Poll until the job has ended (succeeded, failed, cancelled or pruned) or is paused.

        Args:
            job_id: the full id or a unique prefix.
            poll: seconds between polls.
            timeout: give up after this many seconds; None waits forever.
            on_update: called with the job after every poll, the final one included.
            unreachable_grace: keep polling through an unreachable service for this long
                (an API restart) before giving up.

        Returns:
            dict: the job in its final state, or paused.

        Raises:
            TimeoutError: the job had not ended after ``timeout`` seconds.
            ServiceUnreachable: the service stayed unreachable for ``unreachable_grace`` s.
            ApiError: any error answer (a 404 is not retried).

        Example:
            >>> job = api.wait_job(job["id"], on_update=lambda j: print(j["progress"]))
            >>> job["status"], job["summary"]["final_metrics"]["val_loss"]
        """
        return wait_until_ended(lambda: self.get_job(job_id), JOB_WAIT_ENDS, f"job {job_id}",
                                poll, timeout, on_update, unreachable_grace)

    # --- sweeps -------------------------------------------------------------------------------

    def submit_sweep(self, spec: dict) -> dict:
        """Validate and store a sweep; its scheduler queues the first trials.

        Args:
            spec: the sweep spec (a base job spec, the parameters to search, the objective).

        Returns:
            dict: the sweep, with its ``id``, ``progress`` and ``max_parallel``.

        Raises:
            ApiError: 422 ``invalid_spec`` with one detail per wrong field.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", "/sweeps", json_body=spec)

    def get_sweep(self, sweep_id: str) -> dict:
        """One sweep with its trials, their jobs and the best trial so far.

        Args:
            sweep_id: the full id or a unique prefix.

        Returns:
            dict: the sweep as ``GET /api/v1/sweeps/{id}`` returns it.

        Raises:
            ApiError: 404 ``not_found``; 409 ``ambiguous_id``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", f"/sweeps/{quote(sweep_id)}")

    def list_sweeps(self, status: str | None = None, limit: int | None = None,
                    cursor: str | None = None) -> dict:
        """One page of sweeps, newest first.

        Args:
            status: only sweeps in this status.
            limit: the page size.
            cursor: ``next_cursor`` of the previous page.

        Returns:
            dict: ``{"sweeps": [...], "next_cursor": str | None}``.

        Raises:
            ApiError: 400 for an unknown status, a limit out of range or a foreign cursor.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", "/sweeps", params={"status": status, "limit": limit,
                                                      "cursor": cursor})

    def iter_sweeps(self, status: str | None = None, page_size: int = 100) -> Iterator[dict]:
        """Every matching sweep, newest first, page by page.

        Args:
            status: only sweeps in this status.
            page_size: sweeps per request.

        Returns:
            Iterator[dict]: the sweeps.

        Raises:
            ApiError: as :meth:`list_sweeps`, while iterating.
            ServiceUnreachable: no answer from the service, while iterating.
        """
        return pages(self.list_sweeps, "sweeps", page_size, status=status)

    def cancel_sweep(self, sweep_id: str) -> dict:
        """Cancel a sweep: no new trials, and its running trials stop at an epoch boundary.

        Args:
            sweep_id: the full id or a unique prefix.

        Returns:
            dict: the sweep after the request.

        Raises:
            ApiError: 409 ``illegal_state`` once the sweep has ended; 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", f"/sweeps/{quote(sweep_id)}/cancel")

    def wait_sweep(self, sweep_id: str, poll: float = 1.0, timeout: float | None = None,
                   on_update: Callable[[dict], None] | None = None,
                   unreachable_grace: float = 30.0) -> dict:
        """Poll until the sweep has ended (succeeded, failed or cancelled) or is paused.

        Args:
            sweep_id: the full id or a unique prefix.
            poll, timeout, on_update, unreachable_grace: as :meth:`wait_job`.

        Returns:
            dict: the sweep in its final state (its ``best`` trial included), or paused.

        Raises:
            TimeoutError: the sweep had not ended after ``timeout`` seconds.
            ServiceUnreachable: the service stayed unreachable for ``unreachable_grace`` s.
            ApiError: any error answer.
        """
        return wait_until_ended(lambda: self.get_sweep(sweep_id), SWEEP_WAIT_ENDS,
                                f"sweep {sweep_id}", poll, timeout, on_update, unreachable_grace)

    # --- datasets and health ------------------------------------------------------------------

    def upload_dataset(self, path: str | os.PathLike, name: str | None = None) -> dict:
        """Upload a CSV or an .npz file (multipart field ``file``) for jobs to train on.

        Args:
            path: the CSV file (a header row, then at least 2 data rows), or an ``.npz`` (by
                its suffix; ``np.savez(path, x=x, y=y)``: x of any shape, y one target per
                sample), sent as ``application/x-npz``.
            name: the dataset's name; default the server's choice.

        Returns:
            dict: the dataset: its ``id`` (for ``dataset: {"kind": "upload", "id": ...}``),
            ``n_rows`` and a profile of each column.

        Raises:
            OSError: ``path`` cannot be read.
            ApiError: 400 or 422 for a file that is not a usable CSV or .npz (the details
                name the array or column), 413 when it is too big.
            ServiceUnreachable: no answer from the service.
        """
        path = Path(path)
        boundary = uuid.uuid4().hex
        filename = path.name.replace('"', "_")
        ctype = "application/x-npz" if path.suffix.lower() == ".npz" else "text/csv"
        body = b"".join([
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            f"Content-Type: {ctype}\r\n\r\n".encode(),
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        return self.request("POST", "/datasets", params={"name": name}, data=body,
                            content_type=f"multipart/form-data; boundary={boundary}")

    def list_datasets(self, limit: int | None = None) -> dict:
        """The uploaded datasets, newest first.

        Args:
            limit: how many (the server's default 100, at most 1000).

        Returns:
            dict: ``{"datasets": [...]}``.

        Raises:
            ApiError: 400 for a limit out of range.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", "/datasets", params={"limit": limit})

    def get_dataset(self, dataset_id: str) -> dict:
        """One uploaded dataset and its column profile.

        Args:
            dataset_id: the dataset's id.

        Returns:
            dict: the dataset as :meth:`upload_dataset` returned it.

        Raises:
            ApiError: 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", f"/datasets/{quote(dataset_id)}")

    def upload_model(self, path: str | os.PathLike, name: str | None = None) -> dict:
        """Upload a ``.keras`` model (Keras 3's ``model.save``) for jobs to train.

        Args:
            path: the file: a Sequential or Functional model of Keras's built-in layers.
            name: the model's name; default the file's name.

        Returns:
            dict: the model: its ``id`` (for ``model: {"uploaded": ...}``), its layers as
            kerasyard's specs, input shape and parameters. Its weights are the starting
            weights of every job that trains it.

        Raises:
            OSError: ``path`` cannot be read.
            ApiError: 422 ``invalid_model`` naming each problem (a Lambda layer, a custom
                object, an option kerasyard does not model); 413 when it is too big.
            ServiceUnreachable: no answer from the service.
        """
        path = Path(path)
        boundary = uuid.uuid4().hex
        body = b"".join([
            f"--{boundary}\r\n".encode(),
            (f'Content-Disposition: form-data; name="file"; '
             f'filename="{path.name.replace(chr(34), "_")}"\r\n').encode(),
            b"Content-Type: application/x-keras\r\n\r\n",
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        return self.request("POST", "/models", params={"name": name}, data=body,
                            content_type=f"multipart/form-data; boundary={boundary}")

    def list_models(self, limit: int | None = None) -> dict:
        """The uploaded models, newest first.

        Args:
            limit: how many (the server's default 100, at most 1000).

        Returns:
            dict: ``{"models": [...]}``, each without its layers.

        Raises:
            ApiError: 400 for a limit out of range (1 to 1000).
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", "/models", params={"limit": limit})

    def get_model(self, model_id: str) -> dict:
        """One uploaded model with its layers.

        Args:
            model_id: the model's id.

        Returns:
            dict: the model as :meth:`upload_model` returned it.

        Raises:
            ApiError: 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("GET", f"/models/{quote(model_id)}")

    def health(self) -> dict:
        """Database, broker and MLflow reachability.

        Returns:
            dict: ``{"status": "ok" | "degraded", "components": {name: {"ok", "detail"}}}``.
            A degraded service answers 503; its body is returned, not raised.

        Raises:
            ApiError: any other error answer (401 without the right token).
            ServiceUnreachable: no answer from the service.
        """
        try:
            return self.request("GET", "/health")
        except ApiError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "components" in exc.body:
                return exc.body
            raise
