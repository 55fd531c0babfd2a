"""Where the work runs: the Dask client (:mod:`~cloudlulc.runtime.cluster`), the process settings
of the workers (:mod:`~cloudlulc.runtime.worker`) and the steps of Prefect deployments
(:mod:`~cloudlulc.runtime.deploy_steps`)."""

from cloudlulc.runtime.cluster import (
    DaskClusterError,
    cluster_name,
    dask_client,
    kube_cluster_spec,
    load_spec,
    make_cluster,
)
from cloudlulc.runtime.worker import apply_worker_limits, export_to_child_processes, nanny_environ

__all__ = [
    "DaskClusterError",
    "apply_worker_limits",
    "cluster_name",
    "dask_client",
    "export_to_child_processes",
    "kube_cluster_spec",
    "load_spec",
    "make_cluster",
    "nanny_environ",
]
