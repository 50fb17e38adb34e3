"""Write sequences.npz for examples/sequence_lstm.json: integer token sequences and a label.

    python examples/make_sequences.py [sequences.npz]

Each of the 1,000 sequences is 20 token ids below 16. Every sequence holds one 1 and one 2
among ordinary tokens 3..15 (0, the usual padding id, never occurs); the label is 1 when the 1
comes before the 2. Nothing else tells the classes apart: a model has to follow the order (an
LSTM does; counting tokens does not).

Upload it, then train on it (the service on 127.0.0.1:8000):

    ID=$(curl -s -X POST 'http://127.0.0.1:8000/api/v1/datasets?name=sequences' \\
         -H 'Content-Type: application/x-npz' --data-binary @sequences.npz \\
         | python -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    sed "s/the-id-of-sequences.npz/$ID/" examples/sequence_lstm.json | kerasyard submit -

(``kerasyard upload sequences.npz --name sequences`` prints the id too.)
"""

import sys

import numpy as np

N, LENGTH, VOCAB = 1000, 20, 16


def make(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(3, VOCAB, (n, LENGTH))
    first, second = np.sort(np.argsort(rng.random((n, LENGTH)), axis=1)[:, :2], axis=1).T
    y = rng.integers(0, 2, n)
    rows = np.arange(n)
    x[rows, first] = np.where(y == 1, 1, 2)  # 1 ... 2: label 1
    x[rows, second] = np.where(y == 1, 2, 1)  # 2 ... 1: label 0
    return x.astype("int32"), y.astype("int32")


if __name__ == "__main__":
    x, y = make()
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "sequences.npz", x=x, y=y)
