"""/api/v1/openapi.json and /api/v1/docs (a self-contained page: no CDN, works offline)."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, redirect

from .context import settings_of
from .openapi import document

bp = Blueprint("docs", __name__)


@bp.get("/api/v1/openapi.json")
def openapi():
    # What this deployment asks: the bearer token when KERASYARD_API_TOKEN is set, none if not.
    return document(token_required=bool(settings_of().api_token))


@bp.get("/openapi.json")
def openapi_root():
    return redirect("/api/v1/openapi.json")


@bp.get("/api/v1/docs")
def docs():
    page = resources.files(__package__).joinpath("docs.html").read_text()
    return Response(page, mimetype="text/html")


@bp.get("/docs")
def docs_root():
    return redirect("/api/v1/docs")
