"""/api/v1/jobs: thin routes; the work is in service.jobs."""

from __future__ import annotations

from flask import Blueprint, request, url_for

from service import jobs
from service.api.body import bool_arg, int_arg, json_body
from service.api.context import settings_of

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")


@bp.post("")
def create_job():
    job = jobs.submit_job(settings_of(), json_body())
    return job, 202, {"Location": url_for("jobs.get_job", job_id=job["id"])}


@bp.get("")
def list_jobs():
    a = request.args
    return jobs.list_jobs(settings_of(), status=a.get("status"),  # "" is not a status: 400
                          experiment=a.get("experiment") or None,
                          sweep_id=a.get("sweep_id") or None,
                          standalone=bool_arg("standalone"),
                          limit=int_arg("limit", 50, 1, 500), cursor=a.get("cursor") or None)


@bp.get("/<job_id>")
def get_job(job_id: str):
    return jobs.get_job(settings_of(), job_id)


@bp.get("/<job_id>/history")
def job_history(job_id: str):
    return jobs.history(settings_of(), job_id)


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str):
    return jobs.cancel_job(settings_of(), job_id), 202


@bp.post("/<job_id>/pause")
def pause_job(job_id: str):
    return jobs.pause_job(settings_of(), job_id)


@bp.post("/<job_id>/resume")
def resume_job(job_id: str):
    return jobs.resume_job(settings_of(), job_id), 202
