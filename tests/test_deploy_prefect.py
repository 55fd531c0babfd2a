"""The operator's path through ``deploy/prefect.yaml``, for real: a temporary Prefect server, both
work pools created and every deployment registered with the CLI (``prefect deploy --all``), each
Kubernetes deployment's Job rendered the way the Kubernetes worker renders it (prefect-kubernetes)
and validated against the Kubernetes OpenAPI schema (strict), ``map-aoi/default`` run through a
process worker, and the NRT deployment's flow writing to an S3 API on loopback (moto).

No Kubernetes cluster or container engine exists here: the Jobs are validated, not run.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.importtools import import_object
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration
from s3_server import BUCKET, environ, moto_s3

from cloudlulc.store import mapped_times
from flows.demo import demo_aoi_and_time
from flows.local_server import (
    LocalServerError,
    PrefectServer,
    flow_run_message,
    pool_worker,
    prefect_cli,
    prefect_server,
    run_deployment_cli,
    wait_for_flow_run,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE = "ghcr.io/example/cloudlulc:0.1.0"
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
PROCESS = {"map-aoi/default", "build-dataset/default", "train/default", "train/local-cpu-2", "evaluate/default"}
#: flow pods without a GPU: map runs infer on their DaskCluster's GPU workers; datasets need none
NO_GPU = {"map-aoi/k8s-gpu", "map-aoi-nrt/berlin", "build-dataset/k8s-cpu"}
GPU = {"train/k8s-gpu", "evaluate/k8s-gpu"}
#: small tiles and chunks, CPU, no retry delay: seconds per flow run on a busy 2-core machine
FAST = {
    "CLOUDLULC_DEVICE": "cpu",
    "CLOUDLULC_TILE": "64",
    "CLOUDLULC_OVERLAP": "16",
    "CLOUDLULC_CHUNK_SIZE": "64",
    "CLOUDLULC_RETRY_DELAY_SECONDS": "0",
    "CLOUDLULC_DASK_THREADS_PER_WORKER": "2",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server with both pools and every deployment of deploy/prefect.yaml, registered from a
    machine whose CLOUDLULC_HOME is not the workers' (it must not end up in the deployments)."""
    with prefect_server(tmp_path_factory.mktemp("prefect")) as srv:
        prefect_cli(srv, "work-pool", "create", "cloudlulc-process", "--type", "process")
        prefect_cli(
            srv,
            "work-pool",
            "create",
            "cloudlulc-k8s",
            "--type",
            "kubernetes",
            "--base-job-template",
            "deploy/kubernetes/base-job-template.json",
            cwd=REPO,
        )
        deploy_env = {"CLOUDLULC_IMAGE": IMAGE, "CLOUDLULC_HOME": "/opt/deploying-machine-only"}
        prefect_cli(srv, "deploy", "--prefect-file", "deploy/prefect.yaml", "--all", env=deploy_env, cwd=REPO)
        with temporary_settings({PREFECT_API_URL: srv.api_url}):
            yield srv
            APILogWorker.drain_all(timeout=5)  # the in-process flow runs' logs, before the server stops


def _deployments() -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        return {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}


async def _render_job(name: str) -> dict[str, Any]:
    """The Job the Kubernetes worker would create for a new run of deployment ``name``."""
    async with get_client() as client:
        flow_name, dep_name = name.split("/")
        dep = await client.read_deployment_by_name(f"{flow_name}/{dep_name}")
        pool = await client.read_work_pool(dep.work_pool_name)
        flow = await client.read_flow(dep.flow_id)
        run = FlowRun(id=uuid.uuid4(), name="calm-otter", flow_id=dep.flow_id, deployment_id=dep.id)
        config = await KubernetesWorkerJobConfiguration.from_template_and_values(
            pool.base_job_template, dep.job_variables or {}, client=client
        )
        config.prepare_for_flow_run(run, dep, flow)
        return config.job_manifest


def test_every_deployment_registers_with_a_working_directory_resolved_on_the_worker(server):
    deps = _deployments()
    assert set(deps) == PROCESS | NO_GPU | GPU
    for name, dep in deps.items():
        assert dep.work_pool_name == ("cloudlulc-process" if name in PROCESS else "cloudlulc-k8s"), name
        assert "/opt/deploying-machine-only" not in json.dumps(dep.pull_steps), name  # not the deployer's
        assert dep.pull_steps == [{"cloudlulc.runtime.deploy_steps.enter_home": {"variable": "CLOUDLULC_HOME"}}]
        if name not in PROCESS:
            assert dep.job_variables["image"] == IMAGE, name
    nrt = deps["map-aoi-nrt/berlin"]
    assert nrt.schedules and nrt.schedules[0].schedule.cron == "0 */6 * * *"
    assert nrt.global_concurrency_limit.limit == 1 and nrt.parameters["output"].startswith("s3://")
    dask_env = deps["map-aoi/k8s-gpu"].job_variables["env"]
    assert dask_env["CLOUDLULC_DASK_CLUSTER"] == "kubernetes" and dask_env["CLOUDLULC_IMAGE"] == IMAGE
    assert deps["train/local-cpu-2"].parameters == {"processes": 2, "device": "cpu"}


def test_the_kubernetes_jobs_validate_and_only_training_and_evaluation_hold_a_gpu(server):
    for name in sorted(NO_GPU | GPU):
        job = asyncio.run(_render_job(name))
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(job, version, strict=True)
        assert job["spec"]["parallelism"] == 1 and job["spec"]["completions"] == 1
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == IMAGE and pod["serviceAccountName"] == "cloudlulc-flows", name
        assert container["envFrom"] == [{"secretRef": {"name": "cloudlulc-env", "optional": True}}]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "PREFECT__FLOW_RUN_ID" in env and env["CLOUDLULC_DEVICE"] == ("cuda" if name in GPU else "auto")
        limits = container["resources"]["limits"]
        if name in GPU:
            assert limits["nvidia.com/gpu"] == 1 and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        else:
            assert "nvidia.com/gpu" not in limits, name
            assert "nodeSelector" not in pod and "tolerations" not in pod, name


def test_deploying_the_kubernetes_pool_without_an_image_is_refused(server):
    """Unset (test_deploy_manifests checks the unpinned ones): the build step stops the deployment."""
    with pytest.raises(LocalServerError, match="CLOUDLULC_IMAGE is not set"):
        prefect_cli(
            server,
            "deploy",
            "--prefect-file",
            "deploy/prefect.yaml",
            "--name",
            "berlin",
            env={"CLOUDLULC_IMAGE": ""},
            cwd=REPO,
        )
    assert _deployments()["map-aoi-nrt/berlin"].job_variables["image"] == IMAGE  # left as it was


def test_map_aoi_default_runs_through_a_process_worker(server, sim_catalog, stac_url, tmp_path):
    """The worker runs in a directory of its own; the relative output lands under its CLOUDLULC_HOME."""
    home, elsewhere = tmp_path / "checkout", tmp_path / "worker-cwd"
    home.mkdir()
    elsewhere.mkdir()
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=200)
    env = {**FAST, "CLOUDLULC_HOME": str(home)}
    with pool_worker(server, "cloudlulc-process", env, log_path=tmp_path / "worker.log", cwd=elsewhere):
        params = {"aoi": aoi, "time": window.split("/")[0], "output": "maps/aoi.zarr", "catalog_url": stac_url}
        run_id = run_deployment_cli(server, "map-aoi/default", params, cwd=elsewhere)
        state = wait_for_flow_run(server, run_id, timeout=400)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert state == "COMPLETED", f"{flow_run_message(server, run_id)}\n{log[-3000:]}"
    assert len(mapped_times(home / "maps/aoi.zarr")) == 1
    assert not (elsewhere / "maps").exists()


def test_the_nrt_deployments_flow_writes_to_s3(server, sim_catalog, stac_url, tmp_path, monkeypatch):
    """The berlin deployment's flow with its registered parameters, on the simulated catalog's AOI
    and an s3:// store of a loopback S3 API; credentials only in the environment."""
    dep = _deployments()["map-aoi-nrt/berlin"]
    flow = import_object(dep.entrypoint)
    aoi, _ = demo_aoi_and_time(sim_catalog, half_side_m=200)
    store = f"s3://{BUCKET}/nrt/berlin.zarr"
    for k, v in {**dep.job_variables["env"], **FAST}.items():
        if not k.startswith(("CLOUDLULC_DASK", "CLOUDLULC_IMAGE")):  # no Kubernetes here: Dask threads
            monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # quicklooks of an object-store output go to the working directory
    params = {**dep.parameters, "aoi": aoi, "output": store, "catalog_url": stac_url, "now": "2022-01-17"}
    with moto_s3(tmp_path) as s3, environ(s3.env()):
        first = flow(**params)
        again = flow(**params)
        times = [str(t)[:10] for t in mapped_times(store)]
        ds = xr.open_zarr(store, decode_coords="all")
        assert ds["lulc"].rio.crs is not None and ds.sizes["time"] == len(times)
    assert [a["time"][:10] for a in first["acquisitions"]] == times == ["2022-01-06", "2022-01-16"]
    assert again["acquisitions"] == []  # nothing mapped twice
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != s3.secret  # the credentials were scoped to the run
