"""The whole stack on one machine, as child processes: ``make run``'s embedded service
(:mod:`devstack.run`), the test suite's servers and the benchmarks'.

Development tooling, not the control plane: :mod:`service` never imports it (an import-linter
contract), and it imports nothing of ``worker``, Keras, TensorFlow, JAX or MLflow; it only
spawns them as subprocesses.

- :mod:`devstack.processes`: :class:`Process`, ``parent_death_signal``, :func:`free_port`,
  :func:`wait_http`, :func:`find_binary`;
- :mod:`devstack.servers`: :class:`MlflowServer`, :class:`WorkerProcess`, :class:`ApiServer`;
- :mod:`devstack.stores`: :class:`RedisServer`, :class:`PostgresServer`;
- :mod:`devstack.run`: ``python -m devstack.run``, what ``make run`` calls.
"""

from .processes import (
                        ROOT,
                        WORKER_READY,
                        Process,
                        StackError,
                        bundled_bin_dirs,
                        find_binary,
                        free_port,
                        parent_death,
                        wait_http,
)
from .servers import (
                        ApiServer,
                        MlflowServer,
                        WorkerProcess,
                        mlflow_server_cmd,
                        mlflow_server_env,
                        worker_cmd,
                        worker_env,
)
from .stores import PostgresServer, RedisServer

__all__ = ["ROOT", "WORKER_READY", "ApiServer", "MlflowServer", "PostgresServer", "Process",
           "RedisServer", "StackError", "WorkerProcess", "bundled_bin_dirs", "find_binary",
           "free_port", "mlflow_server_cmd", "mlflow_server_env", "parent_death", "wait_http",
           "worker_cmd", "worker_env"]
