"""A GPU that TensorFlow lists but cannot compute on: for the GPU check's failure path, on a
machine without a GPU (tests/unit/test_gpu_check.py puts this folder on PYTHONPATH of a
`python -m worker.gpu --json` subprocess).

Only the listing is faked, because it is the one thing a GPU-less machine cannot give:
``tf.config.list_physical_devices("GPU")`` returns one device and
``tf.config.experimental.get_device_details`` names it. Everything after that is TensorFlow's
own: the check's matmul placed on ``/GPU:0`` with soft placement off raises TensorFlow's real
error, as it would on a host whose driver cannot run the wheel's kernels.
"""

import importlib.abc
import importlib.util
import sys

FAKE_NAME = "Fake GPU (tests/fake_gpu)"


def _patch(tf) -> None:
    config = tf.config
    real_list = config.list_physical_devices
    real_details = config.experimental.get_device_details
    fake = config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")

    def list_physical_devices(device_type=None):
        if device_type == "GPU":
            return [fake]
        return real_list(device_type)

    def get_device_details(device):
        if device == fake:
            return {"device_name": FAKE_NAME, "compute_capability": (9, 0)}
        return real_details(device)

    config.list_physical_devices = list_physical_devices
    config.experimental.get_device_details = get_device_details


class _AfterTensorFlow(importlib.abc.MetaPathFinder):
    """Lets ``import tensorflow`` run as usual, then patches the module it made."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AfterTensorFlow())
