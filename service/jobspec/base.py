"""What every spec model shares: strictness, and the activations Keras knows by name."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

ACTIVATIONS = (
    "relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "gelu", "silu", "swish",
    "leaky_relu", "softplus", "softsign", "hard_sigmoid", "exponential", "relu6", "mish",
)
Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]


class StrictModel(BaseModel):
    """Unknown keys are errors; no coercion between booleans, strings and numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
