"""``python -m worker.gpu``: what this process's Keras backend computes on.

    python -m worker.gpu                      the device in one line, or why there is no GPU
    python -m worker.gpu --json               detect()'s full answer (the worker's GPU check)
    python -m worker.gpu --smoke VARIANT [--pins FILE]
                                              the image's build-time smoke test
                                              (deploy/worker.Dockerfile; worker/gpu/smoke.py)
"""

from __future__ import annotations

import json
import sys

from worker.gpu import describe
from worker.gpu.backends import detect
from worker.gpu.cuda_libs import describe_loaded


def main(argv: list[str]) -> int:
    if "--smoke" in argv:
        from worker.gpu.smoke import main as smoke

        return smoke(argv[argv.index("--smoke") + 1:])
    result = detect()
    if "--json" in argv:
        print(json.dumps(result), flush=True)
        return 0
    print(describe(result))
    print(f"CUDA libraries loaded: {describe_loaded(result.get('cuda_libraries') or {})}")
    if result.get("compute"):
        print(f"matmul on GPU 0: {result['compute']}")
    if not result.get("gpus"):
        print(f"no GPU: {result.get('reason')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
