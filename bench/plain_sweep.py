"""The lecture sweep as a user writes it without a tracking service: one Python process, a
``for`` loop over the configurations, plain Keras, no tracking.

    python bench/plain_sweep.py [--epochs 10,50,200] [--batch-sizes 1,5,40,200]
                                [--activations sigmoid,relu,tanh]

Same data (scikit-learn make_classification, 250 samples, random_state=0), model, loss,
optimizer and validation split (0.2: the lecture's 200 training samples) as
examples/sweep_lecture.json, one seed (the bench sets repeats to 1); every configuration trains
on its own.
bench/sweep_bench.py runs it as a subprocess and times the whole process; the last line it
prints is JSON with each trial's final val_loss and the summed fit time.
"""

import argparse
import json
import time

T_START = time.perf_counter()

import keras  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", default="10,50,200")
parser.add_argument("--batch-sizes", default="1,5,40,200")
parser.add_argument("--activations", default="sigmoid,relu,tanh")
args = parser.parse_args()

X, y = make_classification(n_samples=250, n_features=50, n_informative=10, n_redundant=2,
                           n_classes=10, n_clusters_per_class=1, random_state=0)
results, fit_s = {}, 0.0
for bs in [int(b) for b in args.batch_sizes.split(",")]:
    for act in args.activations.split(","):
        for epochs in [int(e) for e in args.epochs.split(",")]:
            keras.utils.set_random_seed(0)
            model = keras.Sequential([
                keras.Input((50,)),
                keras.layers.Dense(64, activation=act),
                keras.layers.Dense(28, activation=act),
                keras.layers.Dense(10, activation="softmax"),
            ])
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            t0 = time.perf_counter()
            history = model.fit(X, y, batch_size=bs, epochs=epochs, validation_split=0.2,
                                verbose=0)
            fit_s += time.perf_counter() - t0
            results[f"bs={bs} act={act} ep={epochs}"] = float(history.history["val_loss"][-1])

print(json.dumps({"backend": keras.backend.backend(), "trials": len(results),
                  "fit_time_s": round(fit_s, 3), "val_loss": results}), flush=True)
