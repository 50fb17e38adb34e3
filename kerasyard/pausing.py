"""Pausing and resuming jobs and sweeps: the part of :class:`kerasyard.Client` that does it."""

from __future__ import annotations

from .transport import quote


class Pausing:
    """``pause_*`` and ``resume_*``; mixed into :class:`kerasyard.Client` (which supplies
    ``request``)."""

    def pause_job(self, job_id: str) -> dict:
        """Pause a job: a queued one at once, a running one at its next epoch boundary (with a
        checkpoint; the answer says ``running`` with ``pause_requested`` until then). No
        worker trains a paused job until it is resumed; it can be cancelled.

        Args:
            job_id: the full id or a unique prefix.

        Returns:
            dict: the job after the request (pausing a paused job changes nothing).

        Raises:
            ApiError: 409 ``illegal_state`` once the job has ended, or for a trial recorded
                from another job's training; 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", f"/jobs/{quote(job_id)}/pause")

    def resume_job(self, job_id: str) -> dict:
        """Queue a paused job again; the next worker trains it. For a running job whose pause
        is still pending, withdraw the pause.

        Args:
            job_id: the full id or a unique prefix.

        Returns:
            dict: the job after the request (``queued``).

        Raises:
            ApiError: 409 ``illegal_state`` when the job is not paused (the message names its
                status); 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", f"/jobs/{quote(job_id)}/resume")

    def pause_sweep(self, sweep_id: str) -> dict:
        """Pause a sweep: its trials pause (running ones at their next epoch boundary) and no
        new ones start until it is resumed.

        Args:
            sweep_id: the full id or a unique prefix.

        Returns:
            dict: the sweep after the request (``paused``).

        Raises:
            ApiError: 409 ``illegal_state`` once the sweep has ended; 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", f"/sweeps/{quote(sweep_id)}/pause")

    def resume_sweep(self, sweep_id: str) -> dict:
        """Resume a paused sweep: its paused trials are queued again and new ones start.

        Args:
            sweep_id: the full id or a unique prefix.

        Returns:
            dict: the sweep after the request.

        Raises:
            ApiError: 409 ``illegal_state`` when the sweep is not paused; 404 ``not_found``.
            ServiceUnreachable: no answer from the service.
        """
        return self.request("POST", f"/sweeps/{quote(sweep_id)}/resume")
