"""kerasyard's client side: ``kerasyard.Client`` (Python) and the ``kerasyard`` command.

Standard library and PyYAML only: no Flask, TensorFlow, Keras or MLflow.
"""

from .client import JOB_TERMINAL, SWEEP_TERMINAL, ApiError, Client, ServiceUnreachable

__all__ = ["JOB_TERMINAL", "SWEEP_TERMINAL", "ApiError", "Client", "ServiceUnreachable"]
