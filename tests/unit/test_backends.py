"""The training code is backend-neutral: the same functions train under JAX as under
TensorFlow (the rest of the suite). The backend runs in its own process, since Keras picks it
at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPT = """
import json, sys
import keras
from service import jobspec as S
from worker.training import datasets as D
from worker.training import trainer as F
from worker.training import model as M
from tests.helpers import lecture_spec
spec, plan = S.validate_job(lecture_spec(epochs=2))
data = D.build_dataset(spec, plan)
keras.utils.set_random_seed(0)
model = M.build_model(spec, plan)
M.compile_model(model, spec, plan, M.choose_steps_per_execution(plan.steps_per_epoch, 256))
hist = F.fit(model, data.x_train, data.y_train, batch_size=plan.batch_size, epochs=2,
             steps_per_execution=model.steps_per_execution, seed=0, shuffle=True)
print(json.dumps({"backend": keras.backend.backend(), "loss": hist["loss"],
                  "params": model.count_params(), "tf_loop": "worker.training.backends.tensorflow"
                  in sys.modules}))
"""


def test_training_code_runs_on_jax():
    backend = "jax"
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and result["params"] == 5374
    assert not result["tf_loop"]  # Model.fit on JAX; the TensorFlow loop is not imported
    assert result["loss"][1] < result["loss"][0]


def test_no_tensorflow_import_in_training_code():
    """Backend neutrality by construction: the worker's code uses keras and keras.ops only, no
    tf.*, outside ``worker/training/backends/`` (a backend's own training loop, imported by
    ``worker/training/trainer.py`` on that backend only) and ``worker/gpu/`` (the device
    probe, which asks each backend for its devices by name, in a subprocess)."""
    backends = ROOT / "worker" / "training" / "backends"
    gpu_check = ROOT / "worker" / "gpu"
    assert (gpu_check / "backends.py").is_file()  # where the probe imports each backend
    for path in (ROOT / "worker").rglob("*.py"):
        if backends in path.parents or gpu_check in path.parents:
            continue
        text = path.read_text()
        assert "import tensorflow" not in text and "from tensorflow" not in text, path
        assert "training.backends" not in text or path.name == "trainer.py", path


def test_service_never_imports_keras_or_worker():
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        for banned in ("import keras", "from keras", "import tensorflow", "from worker",
                       "import worker"):
            assert banned not in text, (path, banned)


@pytest.mark.parametrize("code", [
    "import service.api, service.jobs, service.queue; service.api.create_app()",
    "import worker.celery_app, worker.tasks",  # what the worker's parent process loads
])
def test_parent_processes_never_load_tensorflow(code, tmp_path):
    check = (f"{code}\nimport sys\nbad = [m for m in ('tensorflow', 'keras', 'jax') "
             "if m in sys.modules]\nassert not bad, bad\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERASYARD_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
