"""The worker's TensorFlow training loop against Model.fit, in one run.

    .venv/bin/python -m bench.fitloop_bench [--epochs 30] [--batch-sizes 1,5,40]
                                            [--towers 1,3] [--repeats 3]

(from the repository root). The lecture sweep's MLP (examples/sweep_lecture.json: 200
samples, 160 of them for training, 50 -> 64 -> 28 -> 10, SGD), alone (1 tower) or as a pack of
towers with different hidden activations, trained for ``--epochs`` epochs with validation each
epoch, two ways on the same model, batches and order:

- ``model.fit``: Keras's ``Model.fit`` over the worker's endless batch generator
  (``datasets.epoch_batches``), with ``steps_per_execution`` = the steps of an epoch: the
  worker's loop before ``worker/training/backends/tensorflow.py``;
- ``loop``: ``worker.training.trainer.fit``, the worker's loop now.

Both fits include tracing. Printed per configuration: the median fit time of each, the time
per train step, the ratio loop / model.fit, and whether the final weights are identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # the worker's default (one TF thread)
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

ACTIVATIONS = ["sigmoid", "relu", "tanh", "elu", "selu", "softplus", "gelu", "swish"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-sizes", default="1,5,40")
    parser.add_argument("--towers", default="1,3")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import json

    import keras
    import numpy as np

    from bench.lecture_bench import ROOT
    from service import jobspec as S
    from worker.sweeps import pack as P
    from worker.training import datasets as D
    from worker.training import model as M
    from worker.training import trainer as F

    base = json.loads((ROOT / "examples" / "sweep_lecture.json").read_text())["base"]
    print(f"fitloop bench: Keras {keras.__version__} on {keras.backend.backend()}, "
          f"{args.epochs} epochs, {args.repeats} repeat(s), {os.cpu_count()} CPUs", flush=True)
    print(f"{'batch':>6}{'towers':>7}{'steps':>7}{'model.fit s':>13}{'loop s':>9}"
          f"{'ms/step fit':>13}{'ms/step loop':>14}{'loop/fit':>10}{'same weights':>14}",
          flush=True)
    worst = 0.0
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for n_towers in [int(t) for t in args.towers.split(",")]:
            specs = []
            for act in ACTIVATIONS[:n_towers]:
                d = json.loads(json.dumps(base))
                d["fit"].update(batch_size=bs, epochs=args.epochs)
                d["model"]["layers"][0]["activation"] = d["model"]["layers"][1]["activation"] \
                    = act
                specs.append(S.validate_job(d))
            spec, plan = specs[0]
            data = D.build_dataset(spec, plan)
            yt = M.prepare_targets(data.y_train, spec, plan)
            yv = M.prepare_targets(data.y_val, spec, plan)
            spe = plan.steps_per_epoch

            def build():
                models = []
                for s, p in specs:
                    keras.utils.set_random_seed(s.fit.seed)
                    m = M.build_model(s, p)
                    M.compile_model(m, s, p, spe)
                    models.append(m)
                if n_towers == 1:
                    return models[0], models
                return P.make_pack(models, spe, (data.x_train[:bs], yt[:bs])), models

            times: dict[str, list[float]] = {"fit": [], "loop": []}
            weights = {}
            for _ in range(args.repeats):
                for way in ("fit", "loop"):
                    model, towers = build()
                    t0 = time.perf_counter()
                    if way == "fit":
                        model.fit(D.epoch_batches(data.x_train, yt, bs, spec.fit.seed),
                                  steps_per_epoch=spe, epochs=args.epochs, verbose=0,
                                  validation_data=D.epoch_batches(data.x_val, yv,
                                                                  len(data.x_val), 0, False),
                                  validation_steps=1, shuffle=False)
                    else:
                        F.fit(model, data.x_train, yt, batch_size=bs, epochs=args.epochs,
                              steps_per_execution=spe, seed=spec.fit.seed, shuffle=True,
                              validation=(data.x_val, yv))
                    times[way].append(time.perf_counter() - t0)
                    weights[way] = [w for t in towers for w in t.get_weights()]
            same = all(np.array_equal(a, b) for a, b in zip(weights["fit"], weights["loop"],
                                                            strict=True))
            f, lo = statistics.median(times["fit"]), statistics.median(times["loop"])
            steps = spe * args.epochs
            worst = max(worst, lo / f)
            print(f"{bs:>6}{n_towers:>7}{steps:>7}{f:>13.2f}{lo:>9.2f}"
                  f"{f / steps * 1e3:>13.3f}{lo / steps * 1e3:>14.3f}{lo / f:>10.3f}"
                  f"{str(same):>14}", flush=True)
    print(f"largest loop / model.fit ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
