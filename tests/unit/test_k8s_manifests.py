"""The Kubernetes manifests (deploy/k8s, kustomize) stay valid and keep their guarantees.

No cluster runs here: the test parses every manifest the kustomization lists and checks the
rules that matter, and runs `kubectl kustomize` where kubectl exists.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from perimeter.settings import Settings

pytestmark = pytest.mark.unit

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
}  # fmt: skip


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        path = K8S / name
        assert path.exists(), f"kustomization lists missing file {name}"
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_object_is_a_known_kind_with_a_name(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        assert (d["apiVersion"], d["kind"]) in KNOWN_KINDS, (d["apiVersion"], d["kind"])
        assert d["metadata"]["name"]


def test_deployments_are_probed_bounded_and_unprivileged(docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"perimeter-api", "perimeter-worker"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        mounts_by_volume = {v["name"] for v in pod["volumes"]}
        for c in pod["containers"]:
            assert c["readinessProbe"] and c["livenessProbe"], name
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            models = next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")
            assert models["readOnly"] is True
            assert {m["name"] for m in c["volumeMounts"]} <= mounts_by_volume
            refs = {next(iter(e.values()))["name"] for e in c["envFrom"]}
            assert refs == {"perimeter-config", "perimeter-secrets"}
    worker = deployments["perimeter-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["readinessProbe"]["exec"]["command"] == ["perimeter", "worker-health"]
    api = deployments["perimeter-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_config_is_real_settings_and_keeps_the_timeout_rule(docs: list[dict[str, Any]]) -> None:
    data = by_kind(docs, "ConfigMap")["perimeter-config"]["data"]
    env = {k: v for k, v in data.items() if k.startswith("PERIMETER_")}
    nested: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        sub, _, field = key.removeprefix("PERIMETER_").lower().partition("__")
        assert sub in Settings.model_fields, key
        model = Settings.model_fields[sub].annotation
        assert field in model.model_fields, key  # type: ignore[union-attr]
        nested.setdefault(sub, {})[field] = value
    settings = Settings(**nested)  # type: ignore[arg-type]
    assert not settings.is_embedded
    b = settings.broker
    assert b.visibility_timeout_s > b.task_time_limit_s > b.task_soft_time_limit_s
    assert data["HF_HUB_OFFLINE"] == "1" and data["DO_NOT_TRACK"] == "true"
    # No secret in the ConfigMap: those belong in the Secret.
    assert not any(k.endswith(("API_KEY", "PASSWORD")) for k in data)
    assert "@" not in data.get("PERIMETER_DATABASE__URL", "")


def test_workers_scale_on_the_real_queue(docs: list[dict[str, Any]]) -> None:
    scaled = by_kind(docs, "ScaledObject")["perimeter-worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "perimeter-worker"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == Settings().broker.queue


def test_egress_is_limited_to_dns_and_in_perimeter_services(docs: list[dict[str, Any]]) -> None:
    policy = by_kind(docs, "NetworkPolicy")["perimeter-egress"]
    assert policy["spec"]["podSelector"] == {}
    assert policy["spec"]["policyTypes"] == ["Egress"]
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            assert "ipBlock" not in peer, "no CIDR egress: the internet stays out of reach"


def test_shared_data_volume_is_read_write_many(docs: list[dict[str, Any]]) -> None:
    pvcs = by_kind(docs, "PersistentVolumeClaim")
    assert pvcs["perimeter-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvcs["perimeter-models"]["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_kubectl_renders_the_kustomization() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed here; the structural checks above still ran")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "kind: Deployment" in out.stdout
