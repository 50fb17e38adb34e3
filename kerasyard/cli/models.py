"""``kerasyard models``: list the uploaded ``.keras`` models; ``kerasyard models upload FILE``
uploads one (a job trains it with ``model: {uploaded: ID}``)."""

from __future__ import annotations

from pathlib import Path

import click

from ..client import Client
from . import format as fmt
from .group import CONTEXT, EPILOG, _client, app, global_options, guarded
from .inputs import UsageError
from .ui import Ui


def _run(call) -> int:
    """``call(client, ui)`` with the global options, its errors turned into exit codes."""
    ctx = click.get_current_context()
    ui = Ui(bool(ctx.find_root().meta.get("kerasyard.as_json")))
    return guarded(ui, lambda: call(_client(ctx), ui))


def _listing(client: Client, ui: Ui, limit: int) -> int:
    models = client.list_models(limit=limit)["models"]
    rows = [(fmt.short_id(m.get("id")), m.get("name"),
             "x".join(str(d) for d in m.get("input_shape") or []) + f" {m.get('input_dtype')}",
             str(m.get("n_params")), str(m.get("n_layers")), (m.get("created_at") or "")[:19])
            for m in models]
    ui.result({"models": models},
              fmt.table(["ID", "NAME", "INPUT", "PARAMS", "LAYERS", "CREATED"], rows,
                        right=(3, 4)) if models else "no models")
    return fmt.EXIT_SUCCEEDED


@app.group("models", invoke_without_command=True, context_settings=CONTEXT, epilog=EPILOG,
           help="list the uploaded .keras models, newest first; `kerasyard models upload FILE` "
                "uploads one", short_help="uploaded .keras models (list, upload)")
@global_options
@click.option("--limit", type=int, default=20, show_default=True, help="how many")
@click.pass_context
def cmd_models(ctx: click.Context, limit: int):
    if ctx.invoked_subcommand is None:
        return _run(lambda client, ui: _listing(client, ui, limit))
    return None


@cmd_models.command("upload", context_settings=CONTEXT, epilog=EPILOG,
                    help="upload a .keras model (Keras's built-in layers only; its weights "
                         "are the starting weights); prints its id for model.uploaded")
@global_options
@click.argument("keras_path", metavar="FILE", type=click.Path())
@click.option("--name", help="the model's name (default: the file's)")
def cmd_models_upload(keras_path: str, name: str | None) -> int:
    def upload(client: Client, ui: Ui) -> int:
        if not Path(keras_path).is_file():
            raise UsageError(f"no such file: {keras_path}")
        model = client.upload_model(keras_path, name=name)
        shape = "x".join(str(d) for d in model.get("input_shape") or [])
        ui.result(model, f"{model['id']}  {model.get('name')}: {model.get('n_layers')} layers, "
                         f"{model.get('n_params')} params, input {shape} "
                         f"{model.get('input_dtype')}; train it with "
                         f"model: {{uploaded: {model['id']}}}")
        return fmt.EXIT_SUCCEEDED

    return _run(upload)
