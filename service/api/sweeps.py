"""/api/v1/sweeps: thin routes; the work is in service.sweeps.commands."""

from __future__ import annotations

from flask import Blueprint, request, url_for

from service.api.body import int_arg, json_body
from service.api.context import settings_of
from service.sweeps import commands as sweeps

bp = Blueprint("sweeps", __name__, url_prefix="/api/v1/sweeps")


@bp.post("")
def create_sweep():
    sweep = sweeps.submit_sweep(settings_of(), json_body())
    return sweep, 202, {"Location": url_for("sweeps.get_sweep", sweep_id=sweep["id"])}


@bp.get("")
def list_sweeps():
    a = request.args
    return sweeps.list_sweeps(settings_of(), status=a.get("status"),  # "" is not a status: 400
                              limit=int_arg("limit", 50, 1, 500), cursor=a.get("cursor") or None)


@bp.get("/<sweep_id>")
def get_sweep(sweep_id: str):
    return sweeps.get_sweep(settings_of(), sweep_id)


@bp.post("/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str):
    return sweeps.cancel_sweep(settings_of(), sweep_id), 202


@bp.post("/<sweep_id>/pause")
def pause_sweep(sweep_id: str):
    return sweeps.pause_sweep(settings_of(), sweep_id)


@bp.post("/<sweep_id>/resume")
def resume_sweep(sweep_id: str):
    return sweeps.resume_sweep(settings_of(), sweep_id), 202
