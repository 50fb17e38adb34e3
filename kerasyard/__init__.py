"""kerasyard's client side: ``kerasyard.Client`` (Python) and the ``kerasyard`` command.

``kerasyard.Client`` needs the standard library only; the command adds click, rich and PyYAML.
No Flask, TensorFlow, Keras or MLflow.

- :mod:`kerasyard.client`: :class:`Client`, one method per route; built on
  :mod:`kerasyard.transport` (one HTTP call) and :mod:`kerasyard.polling` (pages, waiting);
- :mod:`kerasyard.errors`: what it raises, :class:`ApiError` and :class:`ServiceUnreachable`;
- :mod:`kerasyard.cli`: the ``kerasyard`` command (click and rich).
"""

from .client import JOB_TERMINAL, SWEEP_TERMINAL, Client
from .errors import ApiError, ServiceUnreachable

__all__ = ["JOB_TERMINAL", "SWEEP_TERMINAL", "ApiError", "Client", "ServiceUnreachable"]
