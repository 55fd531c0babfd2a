"""The deployment material, checked offline: the DaskCluster each run creates against the
dask-kubernetes CRD (the one its Helm chart installs) and its pods against the Kubernetes OpenAPI
schema (strict: unknown fields fail), the RBAC manifests, the commands the Dask pods run, the
Dockerfile (hadolint) and its build context. The rendered Prefect Jobs are checked in
``test_deploy_prefect.py``, against a real Prefect server.

Schemas come from PyPI packages, not the network: ``kubernetes-validate`` bundles the Kubernetes
JSON schemas (Apache-2.0, from yannh/kubernetes-json-schema), ``dask-kubernetes`` ships its CRDs.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dask_kubernetes.operator.validation import validate_cluster_name

from cloudlulc.config import Settings
from cloudlulc.runtime import DaskClusterError, cluster_name, kube_cluster_spec, make_cluster
from cloudlulc.runtime.deploy_steps import DeploymentError, check_image_reference, require_image

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
IMAGE = "ghcr.io/example/cloudlulc:0.1.0"
#: the oldest Kubernetes minor release still supported by the main managed services, and the newest
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())


def _crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of a dask-kubernetes CRD, made strict as the API server's field
    validation is: an object with ``properties`` accepts no other field."""
    path = files("dask_kubernetes") / "operator/deployment/helm/dask-kubernetes-operator/crds" / f"{kind}.yaml"
    crd = yaml.safe_load(path.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def strict(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                if not node.get("x-kubernetes-preserve-unknown-fields"):
                    node["additionalProperties"] = False
            for v in node.values():
                strict(v)
        elif isinstance(node, list):
            for v in node:
                strict(v)

    strict(schema)
    # apiVersion, kind and metadata are the API server's, not in the CRD's schema
    schema["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {}})
    return schema


def _k8s_validate(resource: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def _spec(**settings: Any) -> dict[str, Any]:
    s = Settings(dask_kubernetes_spec=DEPLOY / "dask/kubernetes-cluster.yaml", image=IMAGE, **settings)
    return kube_cluster_spec(s, cluster_name("0f3c2a9e-1111-2222-3333-444455556666"), run_id="0f3c2a9e-1111")


# ----------------------------------------------------------------------------- DaskCluster


def test_the_dask_cluster_of_a_run_validates_against_the_crd_and_kubernetes():
    spec = _spec(dask_n_workers=3)
    jsonschema.validate(spec, _crd_schema("daskcluster"))
    for part in ("scheduler", "worker"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec["spec"][part]["spec"]}
        _k8s_validate(pod)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": spec["spec"]["scheduler"]["service"],
    }
    _k8s_validate(service)


def test_an_integer_gpu_quantity_is_rejected_by_the_crd():
    spec = _spec()
    spec["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        jsonschema.validate(spec, _crd_schema("daskcluster"))


def test_each_run_gets_a_cluster_of_its_own_on_the_configured_image():
    spec = _spec(dask_n_workers=3)
    name = spec["metadata"]["name"]
    assert re.fullmatch(r"cloudlulc-0f3c2a9e-[0-9a-f]{6}", name)
    validate_cluster_name(name)
    assert spec["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == name
    assert spec["metadata"]["labels"]["cloudlulc/flow-run-id"] == "0f3c2a9e-1111"
    assert spec["spec"]["worker"]["replicas"] == 3
    pods = [spec["spec"][p]["spec"] for p in ("scheduler", "worker")]
    assert {c["image"] for p in pods for c in p["containers"]} == {IMAGE}
    names = {cluster_name("0f3c2a9e-1111") for _ in range(20)} | {cluster_name(None) for _ in range(20)}
    assert len(names) == 40
    for n in names:
        validate_cluster_name(n)


def test_only_the_workers_hold_a_gpu():
    spec = _spec()
    worker = spec["spec"]["worker"]["spec"]
    scheduler = spec["spec"]["scheduler"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "GPU=1" in worker["containers"][0]["args"]
    assert "nvidia.com/gpu" not in str(scheduler) and "nodeSelector" not in scheduler


def test_the_dask_pods_run_commands_this_distributed_ships():
    spec = _spec()
    for part in ("scheduler", "worker"):
        args = spec["spec"][part]["spec"]["containers"][0]["args"]
        assert args[:2] == ["dask", part]
        # click parses every option before the eager --help: an unknown option fails here
        argv = [a.replace("$(DASK_WORKER_NAME)", "w-0") for a in args[1:]]
        out = subprocess.run([str(BIN / "dask"), *argv, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr


def test_a_cluster_without_an_image_or_credentials_fails_with_the_fix(tmp_path, monkeypatch):
    spec_file = DEPLOY / "dask/kubernetes-cluster.yaml"
    with pytest.raises(DaskClusterError, match="CLOUDLULC_IMAGE is not set"):
        kube_cluster_spec(Settings(dask_kubernetes_spec=spec_file), "cloudlulc-x")
    with pytest.raises(DaskClusterError, match="not pinned"):
        kube_cluster_spec(Settings(dask_kubernetes_spec=spec_file, image="ghcr.io/x/cloudlulc:latest"), "cloudlulc-x")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kube-config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(dask_cluster="kubernetes", dask_kubernetes_spec=spec_file, image=IMAGE)
    with pytest.raises(DaskClusterError, match="no Kubernetes credentials .*service account cloudlulc-flows"):
        make_cluster(settings)


# --------------------------------------------------------------------------- manifests


def test_the_rbac_manifests_validate_strictly():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes/rbac.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "Role", "RoleBinding"}
    for doc in docs:
        _k8s_validate(doc)
    role = next(d for d in docs if d["kind"] == "Role")
    dask_rule = next(r for r in role["rules"] if "kubernetes.dask.org" in r["apiGroups"])
    assert {"daskclusters", "daskworkergroups"} <= set(dask_rule["resources"])
    assert {"create", "delete", "get", "watch"} <= set(dask_rule["verbs"])


def test_the_pods_use_the_service_accounts_the_rbac_defines():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes/rbac.yaml").read_text()) if d]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    template = yaml.safe_load((DEPLOY / "kubernetes/base-job-template.json").read_text())
    assert template["variables"]["properties"]["service_account_name"]["default"] in accounts
    spec = _spec()
    assert {spec["spec"][p]["spec"]["serviceAccountName"] for p in ("scheduler", "worker")} <= accounts


def test_image_references_must_be_pinned():
    assert check_image_reference("ghcr.io/acme/cloudlulc:0.1.0") == "ghcr.io/acme/cloudlulc:0.1.0"
    assert check_image_reference("registry.local:5000/cloudlulc@sha256:" + "a" * 64)
    for bad in ("", "ghcr.io/acme/cloudlulc", "cloudlulc:latest", "Ghcr.io/x y:1"):
        with pytest.raises(DeploymentError):
            check_image_reference(bad)


def test_require_image_reads_the_deploying_environment(monkeypatch):
    monkeypatch.delenv("CLOUDLULC_IMAGE", raising=False)
    with pytest.raises(DeploymentError, match="CLOUDLULC_IMAGE is not set"):
        require_image()
    monkeypatch.setenv("CLOUDLULC_IMAGE", IMAGE)
    assert require_image() == {"image": IMAGE}


# --------------------------------------------------------------------------- the image


def test_the_dockerfile_passes_hadolint():
    out = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching the path or
    one of its parent directories decides, ``!`` re-includes (Docker's rules, for these patterns)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_image_copies_and_no_virtualenv():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    copied = re.findall(r"^COPY (.+) \S+$", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    sources = [s for line in copied for s in line.split() if not s.startswith("--")]
    assert "constraints.txt" in sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert not _docker_ignored(src, patterns), src
        assert not _docker_ignored(f"{src}/x.py", patterns) or (REPO / src).is_file(), src
    for left_out in (".venv/bin/python", ".git/HEAD", "demo-out/berlin.zarr/zarr.json", "tests/test_flows.py"):
        assert _docker_ignored(left_out, patterns), left_out
    assert _docker_ignored("cloudlulc/__pycache__/config.cpython-311.pyc", patterns)


def test_the_image_pins_every_runtime_dependency():
    pinned = {
        line.split("==")[0]
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for name in ("torch", "prefect", "prefect-kubernetes", "dask-kubernetes", "s3fs", "gcsfs", "adlfs", "zarr"):
        assert name in pinned, name
