"""deploy/: every manifest parses and the fields that matter agree (probes, ports, repository, GPU)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def arg_value(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} given {len(values)} times in {args}"
    return values[0]


def test_every_manifest_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        assert load(path), path


def test_compose_serves_the_repository_on_a_gpu() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    triton = compose["services"]["triton"]
    assert "nvcr.io/nvidia/tritonserver" in triton["image"]
    args = triton["command"]
    repo_path = arg_value(args, "--model-repository")
    assert f"../model_repository:{repo_path}:ro" in triton["volumes"]
    assert arg_value(args, "--model-control-mode") == "none"
    published = {p.rsplit(":", 1)[-1] for p in triton["ports"]}
    assert published == {arg_value(args, "--http-port"), arg_value(args, "--grpc-port"),
                         arg_value(args, "--metrics-port")}
    assert all(p.startswith("127.0.0.1:") for p in triton["ports"])
    gpu = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"] and gpu["count"] >= 1
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    builder = compose["services"]["build-engines"]
    assert "nvcr.io/nvidia/tensorrt" in builder["image"] and builder["command"][0] == "/deploy/build_engines.sh"
    # engines must be built with the TensorRT release of the serving image: same NGC tag
    assert builder["image"].split(":")[1] == triton["image"].split(":")[1]


def test_kubernetes_deployment_probes_ports_volume_gpu() -> None:
    dep = load(K8S / "deployment.yaml")
    assert dep["kind"] == "Deployment"
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    args = container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(arg_value(args, "--http-port")), "grpc": int(arg_value(args, "--grpc-port")),
                     "metrics": int(arg_value(args, "--metrics-port"))}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert arg_value(args, "--model-control-mode") == "none"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    repo_mount = next(m for m in mounts.values() if m["mountPath"] == arg_value(args, "--model-repository"))
    assert repo_mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[repo_mount["name"]]["persistentVolumeClaim"]["claimName"]
    pvc = load(K8S / "pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == claim
    assert volumes[mounts["dshm"]["name"]]["emptyDir"]["medium"] == "Memory"


def test_service_and_hpa_target_the_deployment() -> None:
    dep, svc, hpa = (load(K8S / f) for f in ("deployment.yaml", "service.yaml", "hpa.yaml"))
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == container_ports
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == 8001
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["metrics"]
    kustomization = load(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")


def test_build_engines_script_plans_each_deferred_model(tmp_path: Path) -> None:
    from quantplug.builtin.backends.tensorrt import tensorrt_unavailable_reason
    from quantplug.triton.repository import add_model

    from .test_triton_repository import tiny_onnx

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is available here: add_model builds the plan instead of deferring")
    repo = tmp_path / "repo"
    add_model(repo, "trt", tiny_onnx(tmp_path / "t.onnx"), backend="tensorrt", max_batch_size=16,
              preferred_batch_sizes=[8], options={"defer_build": True})
    result = subprocess.run(["bash", str(DEPLOY / "build_engines.sh"), "--dry-run", str(repo)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    version = repo / "trt" / "1"
    assert line.startswith(f"trtexec --onnx={version}/model.onnx --saveEngine={version}/model.plan.tmp --int8")
    assert "--minShapes=x:1x4 --optShapes=x:8x4 --maxShapes=x:16x4" in line
    assert f"--timingCacheFile={repo}/.timing.cache" in line
    bad = subprocess.run(["bash", str(DEPLOY / "build_engines.sh"), str(tmp_path / "absent")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: pass the model repository folder")
