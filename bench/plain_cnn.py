"""The digits CNN (examples/digits_cnn.json) as a user writes it: plain Keras, no service.

    KERAS_BACKEND=tensorflow python bench/plain_cnn.py [EPOCHS]

Same data as the service trains on (scikit-learn's digits, the rows shuffled by seed 0, the
last 20 % held out, standardized with the training rows' mean and std), same model, loss,
optimizer, batch size and epochs as the example. bench/cnn_bench.py runs it as a subprocess
and times the whole process; the last line it prints is JSON with its own fit time.
"""

import json
import sys
import time

T_START = time.perf_counter()

import keras
import numpy as np
from sklearn.datasets import load_digits

T_IMPORTED = time.perf_counter()

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 20

x, y = load_digits(return_X_y=True)
order = np.random.default_rng(0).permutation(len(x))
x, y = x[order].astype("float32"), y[order].astype("int32")
n_train = len(x) - int(len(x) * 0.2)
mean, std = x[:n_train].mean(axis=0), x[:n_train].std(axis=0)
std[std == 0] = 1.0
x = (x - mean) / std

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Reshape((8, 8, 1)),
    keras.layers.Conv2D(16, 3, activation="relu"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])

t0 = time.perf_counter()
history = model.fit(x[:n_train], y[:n_train], batch_size=32, epochs=EPOCHS, verbose=0,
                    validation_data=(x[n_train:], y[n_train:]))
fit_time = time.perf_counter() - t0

print(json.dumps({
    "backend": keras.backend.backend(),
    "epochs": len(history.history["loss"]),
    "fit_time_s": round(fit_time, 4),
    "import_s": round(T_IMPORTED - T_START, 4),
    "final_val_loss": float(history.history["val_loss"][-1]),
    "final_val_accuracy": float(history.history["val_accuracy"][-1]),
}), flush=True)
