"""Sweeps, a layer of their own over jobs.

- :mod:`.commands`: the work behind the /sweeps routes (submit, get, cancel, list).
- :mod:`.trials`: the trials read model (seeds folded into mean and spread, the best trial).
- :mod:`.scheduler`: the lease, :func:`~.scheduler.advance`, the background
  :func:`~.scheduler.tick`, trial creation; sends through a :class:`service.lifecycle.Sender`.
- :mod:`.studies`: Optuna in the service's own database (samplers, pruners, ask).
- :mod:`.hooks`: what a training needs from the sweep layer, reached by the worker through
  :mod:`service.worker_api` only.
"""
