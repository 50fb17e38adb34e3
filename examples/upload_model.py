"""Train a model you built yourself: save it as .keras, upload it, submit a job that trains it.

    python examples/upload_model.py [--url http://127.0.0.1:8000] [--epochs 20]

The model here is a small Keras functional model for scikit-learn's digits (64 pixel values
in, 10 classes out) with a skip connection. The service checks the file (no custom objects, no
Lambda layers), works out its shapes and parameters at submission like any job spec's, and
the worker loads it uncompiled and compiles it with the job's ``compile`` section.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras

from kerasyard import Client


def build() -> keras.Model:
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    more = keras.layers.Dense(32, activation="relu", name="more")(hidden)
    joined = keras.layers.Add(name="skip")([hidden, more])
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(joined)
    return keras.Model(inputs, outputs, name="digits_skip")


def job(model_id: str, epochs: int) -> dict:
    return {
        "name": "digits-uploaded-model",
        "experiment": "examples",
        "dataset": {"kind": "sklearn", "name": "digits"},
        "model": {"uploaded": model_id},
        "compile": {"loss": "sparse_categorical_crossentropy",
                    "optimizer": {"name": "adam", "learning_rate": 0.001},
                    "metrics": ["accuracy"]},
        "fit": {"batch_size": 32, "epochs": epochs, "validation_split": 0.2, "seed": 0},
    }


def upload(api: Client, path: Path, name: str) -> dict:
    """POST /api/v1/models with the file as an application/x-keras body."""
    return api.request("POST", "/models", params={"name": name}, data=path.read_bytes(),
                       content_type="application/x-keras")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="default $KERASYARD_URL or :8000")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    api = Client(args.url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits_skip.keras"
        build().save(path)
        uploaded = upload(api, path, "digits-skip")
    print(f"uploaded model {uploaded['id']}")
    submitted = api.submit_job(job(uploaded["id"], args.epochs))
    print(f"job {submitted['id']} submitted; waiting for it")
    done = api.wait_job(submitted["id"])
    print(f"job {done['id']}: {done['status']}, final metrics "
          f"{(done.get('summary') or {}).get('final_metrics')}")
    return done


if __name__ == "__main__":
    main()
