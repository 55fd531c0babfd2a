"""Where the chunk-level parallelism runs: a Dask client chosen by configuration.

Prefect tasks stay coarse (search, cube, infer, write, publish); the pixels are processed by Dask.
The same pipeline code scales from a laptop to a cluster by configuration only:

* ``dask_cluster="threads"`` (default): Dask's threaded scheduler in this process.
* ``dask_address="tcp://..."``: connect to a running scheduler (nothing is created or closed).
* ``dask_cluster="local"``: a ``distributed.LocalCluster`` on this machine (dashboard, task
  resources such as ``{"GPU": 1}``).
* ``dask_cluster="kubernetes"``: a ``DaskCluster`` of its own per run (dask-kubernetes operator),
  from the YAML spec in ``deploy/dask/`` on the image ``CLOUDLULC_IMAGE`` (GPU workers advertise
  ``resources={"GPU": 1}``), deleted when the run ends (:func:`kube_cluster_spec`).
* ``dask_cluster="coiled"``: a ``coiled.Cluster`` with keyword arguments from ``deploy/dask/coiled.yaml``
  (its ``container`` replaced by ``CLOUDLULC_IMAGE`` when set).

dask-kubernetes and coiled are optional: imported only when selected, with an install hint otherwise.
Worker memory limits (:mod:`cloudlulc.runtime.worker`) are set where the workers start.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudlulc.config import Settings, get_settings
from cloudlulc.errors import CloudLULCError
from cloudlulc.runtime.worker import apply_worker_limits, nanny_environ

log = logging.getLogger(__name__)


class DaskClusterError(CloudLULCError):
    """The configured Dask cluster cannot be created or reached."""


@contextlib.contextmanager
def dask_client(settings: Settings | None = None, *, address: str | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for the configured cluster; close what was created on exit.

    ``address`` overrides ``settings.dask_address`` (the ``map-aoi`` flow passes its parameter).
    A cluster created here is closed on exit; a cluster reached by address is left running.
    With ``dask_cluster="threads"`` (and no address) it yields None with Dask's threaded scheduler
    set as the default for the duration (``dask_threads_per_worker`` threads, else one per core).
    """
    s = settings or get_settings()
    address = address or s.dask_address
    if not address and s.dask_cluster == "threads":
        import dask
        from dask.system import CPU_COUNT

        if s.dask_task_resources:
            log.warning(
                "dask_task_resources %s are ignored by the threaded scheduler; set "
                "CLOUDLULC_DASK_CLUSTER=local (or a cluster address) to enforce them",
                s.dask_task_resources,
            )
        # explicit: outside the main thread (Prefect tasks) Dask would otherwise size a new pool by
        # Python's default, min(32, cores + 4), and oversubscribe the cores
        threads = s.dask_threads_per_worker or CPU_COUNT
        limits = apply_worker_limits(s.malloc_arena_max, s.gdal_cachemax_mb)  # before the threads start
        with dask.config.set(scheduler="threads", num_workers=threads):
            log.info("Dask threaded scheduler, %d threads; %s", threads, limits)
            yield None
        return

    from distributed import Client

    if address:
        try:
            client = Client(address, timeout=s.dask_connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise DaskClusterError(
                f"cannot reach the Dask scheduler at {address!r}: {exc}. Is the cluster running, and is "
                "CLOUDLULC_DASK_ADDRESS / the dask_address parameter right?"
            ) from exc
        log.info("using Dask scheduler %s (dashboard %s)", address, client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return

    cluster = make_cluster(s)
    try:
        client = Client(cluster)
        log.info("Dask %s cluster started (dashboard %s)", s.dask_cluster, client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def make_cluster(settings: Settings) -> Any:
    """Create (but do not connect to) the cluster that ``settings.dask_cluster`` selects."""
    kind = settings.dask_cluster
    if kind == "threads":
        raise DaskClusterError("dask_cluster='threads' is Dask's threaded scheduler, not a cluster; use dask_client()")
    if kind == "local":
        from distributed import LocalCluster

        kwargs: dict[str, Any] = {"processes": settings.dask_processes, "dashboard_address": ":0"}
        if settings.dask_n_workers:
            kwargs["n_workers"] = settings.dask_n_workers
        elif not settings.dask_processes:
            kwargs["n_workers"] = 1
        if settings.dask_threads_per_worker:
            kwargs["threads_per_worker"] = settings.dask_threads_per_worker
        if settings.dask_task_resources:
            kwargs["resources"] = dict(settings.dask_task_resources)
        if not settings.dask_processes:  # worker threads in this process
            limits = apply_worker_limits(settings.malloc_arena_max, settings.gdal_cachemax_mb)
            log.info("in-process LocalCluster; %s", limits)
            return LocalCluster(**kwargs)
        import dask

        # nannies read it when the cluster starts them; None entries unset Dask's own variables
        nanny_limits = nanny_environ(settings.malloc_arena_max, settings.gdal_cachemax_mb)
        environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in nanny_limits.items()}
        with dask.config.set(environ):
            return LocalCluster(**kwargs)
    if kind == "kubernetes":
        return _kube_cluster(settings)
    if kind == "coiled":
        return _coiled_cluster(settings)
    raise DaskClusterError(f"unknown dask_cluster {kind!r}: use threads, local, kubernetes or coiled")


def load_spec(path: Path) -> dict[str, Any]:
    """Read a YAML cluster spec, failing with the path in the message."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise DaskClusterError(
            f"Dask cluster spec {path} does not exist (set CLOUDLULC_DASK_KUBERNETES_SPEC / _COILED_CONFIG)"
        )
    with path.open() as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise DaskClusterError(f"Dask cluster spec {path} is not a YAML mapping")
    return spec


def cluster_name(run_id: str | None = None) -> str:
    """A DaskCluster name of its own for one run: ``cloudlulc-<run>-<random>``, where ``<run>`` is
    the start of ``run_id`` (the Prefect flow run id where there is one). Concurrent runs never
    share a cluster, so none can delete another's when it finishes."""
    run = re.sub(r"[^a-z0-9]", "", (run_id or "").lower())[:8]
    return "-".join(p for p in ("cloudlulc", run, secrets.token_hex(3)) if p)


def kube_cluster_spec(settings: Settings, name: str, *, run_id: str | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource of one run: the spec file (``dask_kubernetes_spec``) named
    ``name``, every container on ``settings.image``, ``dask_n_workers`` workers when set."""
    from cloudlulc.runtime.deploy_steps import DeploymentError, check_image_reference

    spec = copy.deepcopy(load_spec(settings.dask_kubernetes_spec))
    if spec.get("kind") != "DaskCluster":
        raise DaskClusterError(f"{settings.dask_kubernetes_spec} is not a DaskCluster resource (kind: DaskCluster)")
    meta = spec.setdefault("metadata", {})
    meta["name"] = name
    if run_id:
        meta.setdefault("labels", {})["cloudlulc/flow-run-id"] = re.sub(r"[^A-Za-z0-9_.-]", "", run_id)[:63]
    body = spec["spec"]
    selector = body.get("scheduler", {}).get("service", {}).get("selector")
    if isinstance(selector, dict) and "dask.org/cluster-name" in selector:
        selector["dask.org/cluster-name"] = name
    if settings.dask_n_workers:
        body["worker"]["replicas"] = settings.dask_n_workers
    containers = [c for part in ("scheduler", "worker") for c in body[part]["spec"]["containers"]]
    if settings.image:
        try:
            image = check_image_reference(settings.image)
        except DeploymentError as exc:
            raise DaskClusterError(str(exc)) from None
        for c in containers:
            c["image"] = image
    elif any(not c.get("image") for c in containers):
        raise DaskClusterError(
            "CLOUDLULC_IMAGE is not set: the Dask scheduler and workers run the CloudLULC image "
            "(deploy/Dockerfile); the Kubernetes deployments of deploy/prefect.yaml set it"
        )
    return spec


def _kube_cluster(settings: Settings) -> Any:
    try:
        import kr8s
        from dask_kubernetes.operator import KubeCluster
        from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode
    except ImportError as exc:
        raise DaskClusterError(
            "dask_cluster='kubernetes' needs dask-kubernetes: pip install 'cloudlulc[kubernetes]' "
            "(and the Dask operator installed in the cluster, deploy/README.md)"
        ) from exc
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    spec = kube_cluster_spec(settings, cluster_name(run_id), run_id=run_id)  # the configuration first
    name = spec["metadata"]["name"]
    try:
        kr8s.api()  # then credentials: KubeCluster would fail later, and again at exit
    except Exception as exc:
        raise DaskClusterError(
            f"dask_cluster='kubernetes' found no Kubernetes credentials ({exc}): run the flow in a pod with the "
            "service account cloudlulc-flows (deploy/kubernetes/rbac.yaml), or set KUBECONFIG to a kube config "
            "that can create DaskClusters"
        ) from None
    try:
        return KubeCluster(
            custom_cluster_spec=spec,
            namespace=spec["metadata"].get("namespace"),
            create_mode=CreateMode.CREATE_ONLY,
            shutdown_on_close=True,
            quiet=True,
        )
    except Exception as exc:
        raise DaskClusterError(f"DaskCluster {name}: {_kube_hint(exc)}") from exc


def _kube_hint(exc: BaseException) -> str:
    """What went wrong creating a DaskCluster, and what to check (deploy/README.md, section 3)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = f"{type(exc).__name__}: {exc}"
    if status in (401, 403):
        return (
            f"{text}. The flow pod's service account may not create DaskClusters: apply "
            "deploy/kubernetes/rbac.yaml in its namespace"
        )
    if status == 404 or "Custom Resource Definitions" in str(exc):
        return f"{text}. Is the Dask operator installed (helm install dask-kubernetes-operator, deploy/README.md)?"
    if isinstance(exc, TimeoutError):
        return (
            f"{text}. The scheduler or workers did not start: check `kubectl describe pod -l "
            "dask.org/cluster-name=...` for image pulls, GPU nodes and taints"
        )
    return text


def _coiled_cluster(settings: Settings) -> Any:
    try:
        import coiled
    except ImportError as exc:
        raise DaskClusterError("dask_cluster='coiled' needs coiled: pip install coiled (and `coiled login`)") from exc
    kwargs = load_spec(settings.dask_coiled_config)
    if settings.image:
        kwargs["container"] = settings.image
    if settings.dask_n_workers:
        kwargs["n_workers"] = settings.dask_n_workers
    return coiled.Cluster(**kwargs)
