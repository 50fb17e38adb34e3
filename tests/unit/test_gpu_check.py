"""The worker's GPU check computes (worker/gpu/): a compiled matmul, checked against NumPy, whose
failure refuses the gpu queue with the backend's own error; the CUDA libraries the process
loaded, by the nvidia-* wheel each came from; the images' smoke test and CUDA pins.

No GPU here: the matmul code runs for real on the CPU device of TensorFlow and JAX, and on
TensorFlow's "/GPU:0", which does not exist here, for a real failure. One test fakes a listed
GPU (tests/fake_gpu/sitecustomize.py: the listing only) to take the whole probe path, subprocess
included, to a refusal. The real-worker refusal without a GPU:
tests/integration/test_gpu_refusal.py.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.helpers import ROOT
from worker import gpu
from worker.gpu import backends, cuda_libs, smoke

CONSTRAINTS = ROOT / "deploy" / "constraints"
FAKE_GPU = ROOT / "tests" / "fake_gpu"
H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30,
        "compute_capability": "9.0"}


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture
def fresh_probe(monkeypatch):
    """check_worker() sets the module's probe result; undone after the test."""
    monkeypatch.setattr(gpu, "_WORKER_PROBE", None)
    monkeypatch.setattr(gpu, "_LOCAL_PROBE", None)


# --- the matmul ---------------------------------------------------------------------------------

def test_tensorflow_matmul_runs_as_graph_and_xla_on_a_device_and_matches_numpy(tf):
    verdict = backends.compute_check(lambda: backends.tf_matmul(tf, "/CPU:0"))
    assert verdict["ok"] is True, verdict
    assert set(verdict) == {"ok", "graph_first_call_s", "xla_first_call_s", "seconds"}
    assert tf.config.get_soft_device_placement() is True  # restored afterwards


def test_jax_jitted_matmul_runs_on_a_device_and_matches_numpy():
    import jax

    verdict = backends.compute_check(lambda: backends.jax_matmul(jax, jax.devices("cpu")[0]))
    assert verdict["ok"] is True and "xla_first_call_s" in verdict, verdict


def test_a_wrong_product_is_a_failed_check():
    import numpy as np

    a, b, expected = backends.matmul_operands()
    assert (np.maximum(a @ b - 1, 0) == expected).all()
    assert (a @ b == 0).any() and expected.max() > 0  # both sides of the ReLU are taken
    verdict = backends.compute_check(lambda: backends._same(expected + 1, expected, "the matmul"))
    assert verdict["ok"] is False
    assert verdict["error"].startswith("ArithmeticError: the matmul gave a wrong result")


def test_a_matmul_that_raises_refuses_the_gpu_queue_with_the_error(tf, monkeypatch, caplog,
                                                                   fresh_probe):
    """TensorFlow's matmul on a GPU it cannot use (here: one that does not exist, soft placement
    off) raises; the worker whose backend lists a GPU but fails that matmul refuses gpu with
    TensorFlow's own words, and keeps its other queues."""
    verdict = backends.compute_check(lambda: backends.tf_matmul(tf, "/GPU:0"))
    assert verdict["ok"] is False and "GPU:0" in verdict["error"], verdict
    info = {"backend": "tensorflow", "cpu": "x", "gpus": [H100], "compute": verdict}
    monkeypatch.setattr(gpu, "probe", lambda backend, timeout_s: info)
    with caplog.at_level("INFO", logger="worker.gpu"):
        _, refused = gpu.check_worker(["cpu", "gpu"], "tensorflow", True, 5)
    assert set(refused) == {"gpu"}
    assert "lists GPU 0: NVIDIA H100 80GB HBM3 (80.0 GiB) but a matmul on it failed: " \
        f"{verdict['error']}" in refused["gpu"]
    assert "driver >= 555.42.06" in refused["gpu"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "refuses the 'gpu' queue" in errors[0] and "keeps serving cpu" in errors[0]
    # Listed but never computed on (an older probe, a backend without the check): refused too.
    monkeypatch.setattr(gpu, "probe", lambda backend, timeout_s: {**info, "compute": None})
    assert "ran no computation" in gpu.check_worker(["gpu"], "tensorflow", True, 5)[1]["gpu"]


def test_a_gpu_that_computes_is_accepted_and_its_loaded_versions_tagged(monkeypatch, caplog,
                                                                        fresh_probe):
    info = {"backend": "tensorflow", "gpus": [H100], "cuda_version": "12.5.82",
            "cudnn_version": "9.3.0.75", "driver_version": "570.86.15",
            "built_cuda_version": "12.5.1", "built_cudnn_version": "9",
            "compute": {"ok": True, "graph_first_call_s": 41.5, "xla_first_call_s": 2.0},
            "cuda_libraries": {"libcudnn": {"library": "cuDNN", "path": "/x/libcudnn.so.9",
                                            "package": "nvidia-cudnn-cu12",
                                            "version": "9.3.0.75"}}}
    monkeypatch.setattr(gpu, "probe", lambda backend, timeout_s: info)
    with caplog.at_level("INFO", logger="worker.gpu"):
        assert gpu.check_worker(["gpu"], "tensorflow", True, 5) == (info, {})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "matched NumPy's (first call: graph 41.5 s, xla 2 s)" in text
    assert "CUDA libraries loaded: nvidia-cudnn-cu12 9.3.0.75 (cuDNN); built with CUDA 12.5.1, " \
        "cuDNN 9" in text
    assert any(r.levelname == "WARNING" and "compiled the kernels from PTX" in r.getMessage()
               for r in caplog.records)  # 41.5 s for a 64x64 matmul: the driver's PTX JIT
    assert gpu.device_tags() == {
        "kerasyard.device": "GPU 0: NVIDIA H100 80GB HBM3 (80.0 GiB, CUDA 12.5.82, cuDNN "
                            "9.3.0.75, driver 570.86.15)",
        "kerasyard.device_type": "gpu", "kerasyard.cuda_version": "12.5.82",
        "kerasyard.cudnn_version": "9.3.0.75", "kerasyard.driver_version": "570.86.15"}


def test_the_probe_subprocess_with_a_listed_gpu_that_cannot_compute_refuses(fresh_probe):
    """The whole path: `python -m worker.gpu --json` in a subprocess whose TensorFlow lists a
    GPU (the listing faked, tests/fake_gpu) and really fails the matmul on it; probe() reads the
    verdict, check_worker() refuses with TensorFlow's error."""
    env_path = os.pathsep.join([str(FAKE_GPU), str(ROOT), os.environ.get("PYTHONPATH", "")])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path
    try:
        info, refused = gpu.check_worker(["gpu"], "tensorflow", True, 300)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    assert info["gpus"][0]["name"] == "Fake GPU (tests/fake_gpu)", info
    assert info["compute"]["ok"] is False, info
    assert info["cuda_libraries"] == {}  # a CPU TensorFlow loaded no CUDA library
    assert "lists GPU 0: Fake GPU (tests/fake_gpu) but a matmul on it failed: " \
        f"{info['compute']['error']}" in refused["gpu"]


# --- the CUDA libraries a process loaded --------------------------------------------------------

def test_a_cpu_process_reports_no_cuda_library_loaded(tf):
    """This process imported TensorFlow (CPU) and JAX (CPU): none loaded, nothing claimed."""
    import jax  # noqa: F401 - loaded, so that its libraries would show were they CUDA's

    assert cuda_libs.loaded_cuda_libraries() == {}
    assert cuda_libs.describe_loaded({}) == "none loaded"
    info = backends.detect("tensorflow")
    assert info["gpus"] == [] and info["cuda_libraries"] == {} and "compute" not in info
    assert (info["cuda_version"], info["cudnn_version"], info["driver_version"]) == \
        (None, None, None)
    assert info["built_with_cuda"] is False and "has no CUDA support" in info["reason"]


def _fake_wheel(site: Path, name: str, version: str, files: list[str]) -> None:
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                        f"Version: {version}\n")
    (dist_info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    for f in files:
        (site / f).parent.mkdir(parents=True, exist_ok=True)
        (site / f).write_bytes(b"\x7fELF")


def test_loaded_libraries_are_named_by_the_wheel_that_installed_them(tmp_path):
    site = tmp_path / "site-packages"
    _fake_wheel(site, "nvidia-cudnn-cu12", "9.3.0.75", ["nvidia/cudnn/lib/libcudnn.so.9"])
    _fake_wheel(site, "nvidia-cuda-runtime-cu12", "12.5.82",
                ["nvidia/cuda_runtime/lib/libcudart.so.12"])
    _fake_wheel(site, "numpy", "2.0.0", ["numpy/libfake.so"])  # not nvidia-*: never consulted
    driver = tmp_path / "usr" / "lib" / "libcuda.so.570.86.15"
    driver.parent.mkdir(parents=True)
    driver.write_bytes(b"\x7fELF")
    (driver.parent / "libcuda.so.1").symlink_to(driver.name)
    stray = tmp_path / "opt" / "libcublas.so.12"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\x7fELF")
    maps = tmp_path / "maps"
    maps.write_text("\n".join([
        f"7f00-7f01 r-xp 00000000 08:01 11 {site}/nvidia/cudnn/lib/libcudnn.so.9",
        f"7f01-7f02 r--p 00001000 08:01 11 {site}/nvidia/cudnn/lib/libcudnn.so.9",
        f"7f02-7f03 r-xp 00000000 08:01 12 {site}/nvidia/cuda_runtime/lib/libcudart.so.12",
        f"7f03-7f04 r-xp 00000000 08:01 13 {driver.parent / 'libcuda.so.1'}",
        f"7f04-7f05 r-xp 00000000 08:01 14 {stray}",
        "7f05-7f06 r-xp 00000000 08:01 15 /usr/lib/x86_64-linux-gnu/libm.so.6",
        "7f06-7f07 rw-p 00000000 00:00 0 [heap]",
    ]) + "\n")
    dists = list(metadata.distributions(path=[str(site)]))
    libraries = cuda_libs.loaded_cuda_libraries(str(maps), dists=dists)
    assert set(libraries) == {"libcudnn", "libcudart", "libcuda", "libcublas"}
    assert libraries["libcudnn"] == {"library": "cuDNN", "package": "nvidia-cudnn-cu12",
                                     "version": "9.3.0.75",
                                     "path": f"{site}/nvidia/cudnn/lib/libcudnn.so.9"}
    assert libraries["libcuda"]["version"] == "570.86.15"  # from the file the link points at
    assert libraries["libcublas"]["package"] is None  # loaded, but from no nvidia-* wheel
    assert cuda_libs.loaded_versions(libraries) == {
        "cuda_version": "12.5.82", "cudnn_version": "9.3.0.75", "driver_version": "570.86.15"}
    assert cuda_libs.describe_loaded(libraries) == (
        f"cuBLAS from {stray} (no nvidia-* wheel owns it), driver 570.86.15, "
        "nvidia-cuda-runtime-cu12 12.5.82 (CUDA runtime), nvidia-cudnn-cu12 9.3.0.75 (cuDNN)")


# --- the images: CUDA pins and the smoke test ---------------------------------------------------

def test_tensorflow_cuda_pins_are_the_versions_its_and_cuda_extra_was_tested_with():
    """deploy/constraints/cuda.txt pins each nvidia-* wheel of tensorflow's `and-cuda` extra at
    the lower bound TensorFlow declares (the CUDA 12.5.1 / cuDNN 9.3.0 it was built and tested
    with), for the TensorFlow version the `cuda` extra pins, which is the one installed here."""
    from packaging.requirements import Requirement

    pins = smoke.read_pins(CONSTRAINTS / "cuda.txt")
    installed = metadata.version("tensorflow-cpu")  # tensorflow-cpu carries the same metadata
    header = (CONSTRAINTS / "cuda.txt").read_text().splitlines()[0]
    assert header.endswith(f"tensorflow[and-cuda]=={installed}"), header
    assert f'"tensorflow[and-cuda]=={installed}"' in (ROOT / "pyproject.toml").read_text()
    wanted = {}
    for raw in metadata.requires("tensorflow-cpu") or []:
        req = Requirement(raw)
        if req.marker is not None and req.marker.evaluate({"extra": "and-cuda"}) and \
                req.name.startswith("nvidia-"):
            lower = [s.version for s in req.specifier if s.operator == ">="]
            assert len(lower) == 1, raw
            wanted[req.name] = lower[0]
            assert req.specifier.contains(pins.get(req.name, "0")), (raw, pins.get(req.name))
    assert pins == wanted
    assert (pins["nvidia-cuda-runtime-cu12"], pins["nvidia-cudnn-cu12"]) == ("12.5.82",
                                                                             "9.3.0.75")


def test_jax_cuda_pins_cover_the_plugin_and_name_jax_0_10_2_build():
    """jax-cuda12-plugin 0.10.2 is not installed here (no GPU): the names its `with-cuda` extra
    requires (its wheel metadata), each pinned exactly, at the versions it was built with."""
    pins = smoke.read_pins(CONSTRAINTS / "jax-cuda.txt")
    header = (CONSTRAINTS / "jax-cuda.txt").read_text().splitlines()[0]
    import jax

    assert header.endswith(f"jax[cuda12]=={jax.__version__}"), header
    assert f'"jax[cuda12]=={jax.__version__}"' in (ROOT / "pyproject.toml").read_text()
    assert set(pins) == {
        "nvidia-cublas-cu12", "nvidia-cuda-cupti-cu12", "nvidia-cuda-nvcc-cu12",
        "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cufft-cu12",
        "nvidia-cusolver-cu12", "nvidia-cusparse-cu12", "nvidia-nccl-cu12",
        "nvidia-nvjitlink-cu12", "nvidia-cuda-nvrtc-cu12", "nvidia-nvshmem-cu12"}
    # The plugin's _versions: CUDA runtime 12090, cuBLAS 120901, cuDNN 90800, cuFFT 11401,
    # cuSOLVER 11705, cuSPARSE 12510; lower bounds nvcc >= 12.6.85, cuDNN >= 9.8, < 10.
    assert pins["nvidia-cuda-runtime-cu12"].startswith("12.9.")
    assert pins["nvidia-cublas-cu12"].startswith("12.9.1.")
    assert pins["nvidia-cudnn-cu12"].startswith("9.8.0.")
    assert pins["nvidia-cufft-cu12"].startswith("11.4.1.")
    assert pins["nvidia-cusolver-cu12"].startswith("11.7.5.")
    assert pins["nvidia-cusparse-cu12"].startswith("12.5.10.")


def test_a_constraints_line_that_is_not_an_exact_pin_is_refused(tmp_path):
    bad = tmp_path / "c.txt"
    bad.write_text("# comment\nnvidia-cudnn-cu12>=9.3\n")
    with pytest.raises(ValueError, match=r"c.txt:2: 'nvidia-cudnn-cu12>=9.3' is not an exact pin"):
        smoke.read_pins(bad)


def test_smoke_test_passes_for_what_is_here_and_names_what_is_missing(tmp_path):
    found, problems = smoke.smoke("cpu")
    assert problems == [] and any(f.startswith("tensorflow ") for f in found), found
    assert smoke.smoke("cuda")[1] == ["TensorFlow is not a CUDA build: the cuda image installs "
                                      "tensorflow[and-cuda], not tensorflow-cpu"]
    found, problems = smoke.smoke("jax", CONSTRAINTS / "jax-cuda.txt")
    assert any(p.startswith("cannot import jax_cuda12_plugin: ModuleNotFoundError")
               for p in problems), problems
    assert "jax-cuda12-plugin is not installed, JAX is" in " ".join(problems)
    assert "nvidia-cudnn-cu12 is not installed; the constraints pin 9.8.0.87" in problems
    pins = tmp_path / "pins.txt"
    pins.write_text(f"numpy=={metadata.version('numpy')}\nkeras==0.0.1\n")
    assert smoke.pin_problems(smoke.read_pins(pins)) == [
        f"keras is {metadata.version('keras')}; the constraints pin 0.0.1"]
    assert smoke.smoke("rocm")[1] == ["unknown variant 'rocm': one of cpu, cuda, jax"]


def test_every_worker_image_ends_with_the_smoke_test_of_its_variant():
    text = (ROOT / "deploy" / "worker.Dockerfile").read_text()
    assert 'python3 -m worker.gpu --smoke "$WORKER_VARIANT" --pins /tmp/pins.txt' in text
    assert "COPY deploy/constraints/ deploy/constraints/" in text
    assert sys.executable  # the Dockerfile's pin step itself runs in test_compose_file.py
