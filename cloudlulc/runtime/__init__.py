"""Where the work runs: the Dask client (:mod:`~cloudlulc.runtime.cluster`) and the process settings
of the workers (:mod:`~cloudlulc.runtime.worker`)."""

from cloudlulc.runtime.cluster import DaskClusterError, dask_client, load_spec, make_cluster
from cloudlulc.runtime.worker import apply_worker_limits, export_to_child_processes, nanny_environ

__all__ = [
    "DaskClusterError",
    "apply_worker_limits",
    "dask_client",
    "export_to_child_processes",
    "load_spec",
    "make_cluster",
    "nanny_environ",
]
