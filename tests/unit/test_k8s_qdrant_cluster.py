"""The Qdrant cluster manifests (deploy/k8s/qdrant) keep their guarantees: 3 peers in cluster
mode on their own nodes and volumes, the peer port open only between peers, the API only to
Perimeter's namespace, no egress but peers and DNS, and Perimeter's ConfigMap asking for a
layout that survives one node down. No cluster runs here: the manifests are parsed (and
rendered with `kubectl kustomize` where kubectl exists)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from perimeter.settings import QdrantSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
QDRANT = ROOT / "qdrant"
KNOWN_KINDS = {
    ("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
}  # fmt: skip


def _load(folder: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out.extend(d for d in yaml.safe_load_all((folder / name).read_text()) if d)
    return out


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return _load(QDRANT)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_known_kinds_in_the_data_namespace(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        assert (d["apiVersion"], d["kind"]) in KNOWN_KINDS, (d["apiVersion"], d["kind"])
    kustomization = yaml.safe_load((QDRANT / "kustomization.yaml").read_text())
    # Perimeter's ConfigMap and egress policy expect Qdrant in perimeter-data.
    assert kustomization["namespace"] == "perimeter-data"
    perimeter = yaml.safe_load((ROOT / "configmap.yaml").read_text())["data"]
    assert perimeter["PERIMETER_QDRANT__URL"] == "http://qdrant.perimeter-data.svc:6333"


def test_three_peers_in_cluster_mode_on_separate_nodes_and_volumes(
    docs: list[dict[str, Any]],
) -> None:
    sts = _one(docs, "StatefulSet", "qdrant")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["serviceName"] == "qdrant-headless"
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["labelSelector"]["matchLabels"].items() <= (
        spec["template"]["metadata"]["labels"].items()
    )
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 6333, "grpc": 6334, "p2p": 6335}
    config = _one(docs, "ConfigMap", "qdrant-config")["data"]
    assert config["QDRANT__CLUSTER__ENABLED"] == "true"
    assert config["QDRANT__CLUSTER__P2P__PORT"] == "6335"
    assert config["QDRANT__TELEMETRY_DISABLED"] == "true"
    script = container["args"][0]
    assert "--bootstrap" in script and "qdrant-0.qdrant-headless" in script and "--uri" in script
    # Persistent volumes per peer, for storage and snapshots.
    claims = {c["metadata"]["name"]: c for c in spec["volumeClaimTemplates"]}
    assert set(claims) == {"storage", "snapshots"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["storage"] == config["QDRANT__STORAGE__STORAGE_PATH"]
    assert mounts["snapshots"] == config["QDRANT__STORAGE__SNAPSHOTS_PATH"]
    assert all(c["spec"]["accessModes"] == ["ReadWriteOnce"] for c in claims.values())
    # Unprivileged, read-only root, probed.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert (
        container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    )
    refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
    assert refs == {"qdrant-config", "qdrant-secrets"}
    # Peers find each other before they are ready.
    headless = _one(docs, "Service", "qdrant-headless")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert _one(docs, "PodDisruptionBudget", "qdrant")["spec"]["maxUnavailable"] == 1


def test_network_stays_inside_the_perimeter(docs: list[dict[str, Any]]) -> None:
    ingress = _one(docs, "NetworkPolicy", "qdrant-ingress")["spec"]
    assert ingress["policyTypes"] == ["Ingress"]
    by_port: dict[int, list[dict[str, Any]]] = {}
    for rule in ingress["ingress"]:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    # The peer port: only other Qdrant pods.
    assert by_port[6335] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "qdrant"}}}]
    # The API: Perimeter's namespace (and peers forwarding requests).
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "perimeter"}}} in (
        by_port[6333]
    )
    egress = _one(docs, "NetworkPolicy", "qdrant-egress")["spec"]
    assert egress["policyTypes"] == ["Egress"]
    for rule in egress["egress"]:
        for peer in rule["to"]:
            assert "ipBlock" not in peer, "no CIDR egress: the internet stays out of reach"


def test_perimeter_asks_for_a_layout_that_survives_one_node_down() -> None:
    data = yaml.safe_load((ROOT / "configmap.yaml").read_text())["data"]
    q = QdrantSettings(
        **{
            k.removeprefix("PERIMETER_QDRANT__").lower(): v
            for k, v in data.items()
            if k.startswith("PERIMETER_QDRANT__")
        }
    )
    assert q.replication_factor is not None and q.replication_factor >= 2
    # A write needs fewer acknowledgements than there are replicas: one replica down (its node
    # lost) leaves enough to acknowledge.
    assert (q.write_consistency_factor or 1) < q.replication_factor
    # Shards spread evenly over the 3 peers.
    assert q.shard_number is not None and q.shard_number % 3 == 0


def test_kubectl_renders_the_qdrant_kustomization() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed here; the structural checks above still ran")
    out = subprocess.run(
        ["kubectl", "kustomize", str(QDRANT)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    rendered = list(yaml.safe_load_all(out.stdout))
    assert all(d["metadata"]["namespace"] == "perimeter-data" for d in rendered)
    sts = next(d for d in rendered if d["kind"] == "StatefulSet")
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.internal/") and "unprivileged" in image
