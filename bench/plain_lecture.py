"""The lecture example as a student writes it: plain Keras, no service.

    KERAS_BACKEND=jax python bench/plain_lecture.py [EPOCHS]

Same data (scikit-learn make_classification, random_state=0), same model, loss, optimizer,
batch size as examples/lecture_mlp.json. bench/lecture_bench.py runs it as a subprocess and
times the whole process; the last line it prints is JSON with its own fit time.
"""

import json
import sys
import time

T_START = time.perf_counter()

import keras
from sklearn.datasets import make_classification

T_IMPORTED = time.perf_counter()

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000

X, y = make_classification(n_samples=200, n_features=50, n_informative=10, n_redundant=2,
                           n_classes=10, n_clusters_per_class=1, random_state=0)

model = keras.Sequential([
    keras.Input((50,)),
    keras.layers.Dense(64, activation="relu"),
    keras.layers.Dense(28, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])

t0 = time.perf_counter()
history = model.fit(X, y, batch_size=5, epochs=EPOCHS, verbose=0)
fit_time = time.perf_counter() - t0

print(json.dumps({
    "backend": keras.backend.backend(),
    "epochs": len(history.history["loss"]),
    "fit_time_s": round(fit_time, 4),
    "import_s": round(T_IMPORTED - T_START, 4),
    "final_loss": float(history.history["loss"][-1]),
    "final_accuracy": float(history.history["accuracy"][-1]),
}), flush=True)
