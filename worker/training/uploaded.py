"""An uploaded ``.keras`` model, loaded for the job that trains it.

The file is checked again as at upload (:func:`service.worker_api.check_keras_file`: Keras's
built-in layers only, no Lambda, no custom object, nothing that unpacks past the cap), then
Keras loads it in safe mode, uncompiled: the job's spec compiles it. Its weights are the
job's starting weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from service import worker_api as api
from service.config import Settings


class UploadedModelGone(LookupError):
    """The uploaded model was deleted, or was refused by the checks this time."""


def load_uploaded(settings: Settings, model_id: str):
    """The uploaded model ``model_id``, loaded by Keras.

    Args:
        settings (Settings): The database, and the cap a file may unpack to.
        model_id (str): The spec's ``model.uploaded``.

    Returns:
        keras.Model: The model with its uploaded weights, not compiled.

    Raises:
        UploadedModelGone: No model has that id any more, or the file fails the checks
            (the message says why).
    """
    import keras

    got = api.uploaded_model(settings, model_id)
    if got is None:
        raise UploadedModelGone(f"uploaded model {model_id!r} no longer exists; upload the "
                                ".keras file again and submit the job with its new id")
    _name, content = got
    try:
        api.check_keras_file(content, settings.max_upload_bytes)
    except api.KerasFileError as exc:
        raise UploadedModelGone(f"uploaded model {model_id!r} is refused: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="kerasyard-model-") as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(content)
        return keras.saving.load_model(path, compile=False, safe_mode=True)
