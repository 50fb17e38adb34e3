"""Sweeps, a layer of their own over jobs.

- :mod:`.commands`: the work behind the /sweeps routes (submit, get, cancel, list).
- :mod:`.trials`: the trials read model (seeds folded into mean and spread, the best trial).
- :mod:`.scheduler`: the lease, :func:`~.scheduler.advance`, the background
  :func:`~.scheduler.tick`, trial creation; sends through a :class:`service.lifecycle.Sender`.
- :mod:`.studies`: Optuna in the service's own database (samplers, pruners, ask).
- :mod:`.for_worker`: the one entry point for the worker.
"""
