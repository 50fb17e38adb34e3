"""kerasyard's client side: ``kerasyard.Client`` (Python) and the ``kerasyard`` command.

``kerasyard.Client`` needs the standard library only; the command adds click, rich and PyYAML.
No Flask, TensorFlow, Keras or MLflow.
"""

from .client import JOB_TERMINAL, SWEEP_TERMINAL, ApiError, Client, ServiceUnreachable

__all__ = ["JOB_TERMINAL", "SWEEP_TERMINAL", "ApiError", "Client", "ServiceUnreachable"]
