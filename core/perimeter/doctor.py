"""``perimeter doctor``: the perimeter posture of this configuration, checked and explained.

* **Models**: where each model would load from (resolved local paths; never a hub).
* **Telemetry**: every "stay home" switch the ML stack knows, as this process sees it.
* **Endpoints**: every address Perimeter connects to (metadata DB, vector store, broker, LLM,
  OIDC keys, the tracing collector when tracing is on), and whether its host is loopback, in a
  private range (RFC 1918 / IPv6 ULA) or in ``allowed_networks``. Anything else, link-local
  (cloud metadata services live there) included, fails.
* **Auth**: the authentication mode, and whether it fits the API bind address.

The doctor reads settings and the environment, resolves host names (DNS inside the perimeter)
unless told not to, and connects to nothing. Passwords in URLs are masked in its output.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from perimeter.settings import Settings

Status = Literal["ok", "warn", "fail"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
LINK_LOCAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10")
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# variable -> (value Perimeter sets when it is unset, which values are safe)
TELEMETRY_SWITCHES: dict[str, tuple[str, frozenset[str]]] = {
    "HF_HUB_OFFLINE": ("1", _TRUE),
    "TRANSFORMERS_OFFLINE": ("1", _TRUE),
    "HF_DATASETS_OFFLINE": ("1", _TRUE),
    "HF_HUB_DISABLE_TELEMETRY": ("1", _TRUE),
    "DO_NOT_TRACK": ("true", _TRUE),
    "SCARF_NO_ANALYTICS": ("true", _TRUE),
    "ANONYMIZED_TELEMETRY": ("false", _FALSE),
    "VLLM_NO_USAGE_STATS": ("1", _TRUE),
}

Resolver = Callable[[str], list[str]]


@dataclass(frozen=True, slots=True)
class Check:
    area: str  # "model" | "telemetry" | "endpoint" | "auth" | "network"
    name: str
    status: Status
    value: str
    detail: str = ""
    addresses: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": sum(c.status == "fail" for c in self.checks),
            "warnings": sum(c.status == "warn" for c in self.checks),
            "checks": [asdict(c) for c in self.checks],
        }


# -- classification (pure) ----------------------------------------------------------------------


def parse_networks(specs: Sequence[str]) -> tuple[list[IPNetwork], list[str]]:
    """(valid networks, invalid entries)."""
    good: list[IPNetwork] = []
    bad: list[str] = []
    for spec in specs:
        try:
            good.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            bad.append(spec)
    return good, bad


def classify_ip(address: str, allowed: Sequence[IPNetwork] = ()) -> tuple[Status, str]:
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "ok", "loopback"
    if any(ip in net for net in allowed):
        return "ok", "allow-listed"
    if any(ip in net for net in LINK_LOCAL_NETWORKS):
        return "fail", "link-local (not an internal service; cloud metadata lives here)"
    if ip.is_unspecified:
        return "fail", "unspecified address"
    if any(ip in net for net in PRIVATE_NETWORKS):
        return "ok", "private range"
    return "fail", "outside the perimeter (public or unlisted address)"


def system_resolver(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def classify_host(
    host: str | None,
    allowed: Sequence[IPNetwork] = (),
    resolver: Resolver | None = system_resolver,
) -> tuple[Status, str, list[str]]:
    """(status, explanation, resolved addresses) for an endpoint host."""
    if not host:
        return "ok", "local (no network)", []
    host = host.strip("[]")
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return "ok", "loopback", []
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        status, why = classify_ip(host, allowed)
        return status, why, [host]
    if resolver is None:
        return "warn", "host name not resolved (--no-resolve)", []
    try:
        addresses = resolver(host)
    except OSError:
        return "warn", "host name does not resolve from here", []
    if not addresses:
        return "warn", "host name does not resolve from here", []
    verdicts = [(a, *classify_ip(a, allowed)) for a in addresses]
    failing = [(a, why) for a, status, why in verdicts if status == "fail"]
    if failing:
        return "fail", "; ".join(f"{a}: {why}" for a, why in failing), addresses
    kinds = sorted({why for _a, _s, why in verdicts})
    return "ok", ", ".join(kinds), addresses


# -- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    display: str  # secrets masked
    host: str | None  # None: no network (file, local mode, unix socket)


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def endpoints(settings: Settings) -> list[Endpoint]:
    from sqlalchemy.engine import make_url

    from perimeter.composition import llm_base_url

    out: list[Endpoint] = []
    db = make_url(settings.database_url)
    if db.get_backend_name() == "sqlite":
        out.append(Endpoint("metadata database", f"SQLite file {db.database}", None))
    else:
        # No host: a Unix socket on this machine.
        out.append(Endpoint("metadata database", db.render_as_string(hide_password=True), db.host))
    if settings.qdrant.url:
        out.append(Endpoint("vector store", settings.qdrant.url, _url_host(settings.qdrant.url)))
    else:
        out.append(
            Endpoint(
                "vector store",
                f"Qdrant Edge in {settings.storage.data_dir / 'qdrant_edge'}"
                if settings.qdrant.embedded == "edge"
                else f"Qdrant local mode in {settings.storage.data_dir / 'qdrant'}",
                None,
            )
        )
    broker = settings.broker_url
    if broker.startswith(("sqla+sqlite", "redis+socket", "memory")):
        out.append(Endpoint("broker", _mask_url(broker), None))
    else:
        out.append(Endpoint("broker", _mask_url(broker), _url_host(broker.removeprefix("sqla+"))))
    base = llm_base_url(settings)
    embedded = " (embedded server)" if settings.llm.base_url is None else ""
    out.append(Endpoint("LLM", f"{base}{embedded}", _url_host(base)))
    if settings.auth.oidc_jwks_url:
        url = settings.auth.oidc_jwks_url
        out.append(Endpoint("OIDC JWKS", url, _url_host(url)))
    tracing = settings.tracing
    if tracing.enabled and tracing.exporter == "otlp-http" and tracing.endpoint:
        # Spans name documents, tenants and models: the collector must be inside too.
        url = tracing.endpoint
        out.append(Endpoint("tracing collector", _mask_url(url), _url_host(url)))
    return out


# -- the checks ---------------------------------------------------------------------------------


def _model_checks(settings: Settings) -> list[Check]:
    from perimeter.backends.model_paths import ModelNotFound, default_gguf_path, resolve_model_path

    checks: list[Check] = []

    def model(name: str, spec: str) -> None:
        try:
            path = resolve_model_path(spec)
        except ModelNotFound as exc:
            checks.append(Check("model", name, "fail", spec, str(exc)))
            return
        checks.append(Check("model", name, "ok", str(path), f"from {spec}"))

    model(f"embedder ({settings.embedding.kind})", settings.embedding.model)
    checks.extend(_embedding_backend_checks(settings))
    reranker = getattr(settings.retrieval, "reranker_model", None)
    if reranker:
        model("reranker", reranker)
    if settings.llm.base_url is None:
        try:
            gguf = settings.llm.gguf_path or default_gguf_path()
        except ModelNotFound as exc:
            checks.append(Check("model", "LLM (embedded)", "fail", "-", str(exc)))
        else:
            status: Status = "ok" if Path(gguf).is_file() else "fail"
            checks.append(
                Check("model", "LLM (embedded)", status, str(gguf), "GGUF for the embedded server")
            )
    else:
        checks.append(
            Check(
                "model",
                "LLM",
                "ok",
                settings.llm.model,
                f"served by {settings.llm.base_url}; its weights load on that server",
            )
        )
    if settings.parser.pdf_strategy == "fast":
        checks.append(Check("model", "PDF parser", "ok", "fast", "pdfminer, no model"))
    else:
        checks.append(
            Check(
                "model",
                "PDF parser",
                "warn",
                settings.parser.pdf_strategy,
                "needs unstructured's layout models staged into the perimeter",
            )
        )
    checks.append(_ocr_check(settings))
    return checks


def _ocr_check(settings: Settings) -> Check:
    """OCR's models are files inside the rapidocr-onnxruntime package: present or not."""
    if not settings.parser.ocr_enabled:
        return Check("model", "OCR", "ok", "off", "scans and images fail: no extractable text")
    from perimeter.backends.ocr import packaged_model_files

    try:
        files = packaged_model_files()
    except FileNotFoundError as exc:
        return Check("model", "OCR", "fail", "rapidocr", str(exc))
    return Check(
        "model", "OCR", "ok", "rapidocr", f"{len(files)} ONNX models inside the installed package"
    )


def _embedding_backend_checks(settings: Settings) -> list[Check]:
    """For backend 'onnx'/'openvino': the runtime is installed, and whether the graph is already
    exported (else the first process to embed exports it, which takes minutes for BGE-M3)."""
    import importlib.util

    from perimeter.backends.model_paths import ModelNotFound
    from perimeter.backends.onnx_export import GRAPH_INT8_FILE, META_FILE, export_folder
    from perimeter.composition import onnx_cache_dir

    e = settings.embedding
    if e.backend == "torch":
        return [Check("model", "embedding backend", "ok", "torch", f"device {e.device}")]
    module = "openvino" if e.backend == "openvino" else "onnxruntime"
    if importlib.util.find_spec(module) is None:
        return [Check("model", "embedding backend", "fail", e.backend, f"{module} not installed")]
    try:
        folder = export_folder(onnx_cache_dir(settings, e), e.model, e.kind, e.max_seq_length)
    except ModelNotFound as exc:
        return [Check("model", "embedding backend", "fail", e.backend, str(exc))]
    if (folder / META_FILE).is_file():
        if e.onnx_quantize and not (folder / GRAPH_INT8_FILE).is_file():
            detail = "exported; its int8 copy is made at first load"
        else:
            detail = f"exported, runs on {module}"
        return [Check("model", "embedding backend", "ok", str(folder), detail)]
    return [
        Check(
            "model",
            "embedding backend",
            "warn",
            str(folder),
            "not exported yet: the first worker exports it; `perimeter export-onnx` does it now",
        )
    ]


def _telemetry_checks(env: Mapping[str, str]) -> list[Check]:
    checks = []
    for var, (default, safe) in TELEMETRY_SWITCHES.items():
        raw = env.get(var)
        if raw is None or raw == "":
            checks.append(
                Check("telemetry", var, "ok", default, "unset; Perimeter sets it at start-up")
            )
        elif raw.strip().lower() in safe:
            checks.append(Check("telemetry", var, "ok", raw, "set in the environment"))
        else:
            checks.append(
                Check(
                    "telemetry",
                    var,
                    "fail",
                    raw,
                    f"set in the environment to a value that allows network use; use {default}",
                )
            )
    return checks


def _auth_checks(settings: Settings) -> list[Check]:
    mode = settings.auth.mode
    bind = settings.api.host
    bind_status: Status = "ok"
    bind_kind = "loopback"
    try:
        ip = ipaddress.ip_address(bind)
        if not ip.is_loopback:
            bind_status, bind_kind = "warn", "reachable from the network"
    except ValueError:
        if bind != "localhost":
            bind_status, bind_kind = "warn", "reachable from the network"
    checks = [Check("network", "API bind address", bind_status, bind, bind_kind)]
    if mode == "disabled":
        status: Status = "fail" if bind_kind != "loopback" else "warn"
        checks.append(
            Check(
                "auth",
                "mode",
                status,
                mode,
                "NO authentication: every caller is tenant "
                f"{settings.auth.default_tenant!r} with every scope. Only for one user on a "
                "loopback bind; set PERIMETER_AUTH__MODE=api_key (or oidc) otherwise",
            )
        )
    elif mode == "oidc":
        missing = [
            name
            for name, value in (
                ("oidc_issuer", settings.auth.oidc_issuer),
                ("oidc_audience", settings.auth.oidc_audience),
            )
            if not value
        ]
        has_keys = (settings.auth.oidc_jwks_file is None) != (settings.auth.oidc_jwks_url is None)
        if missing or not has_keys:
            detail = "missing " + ", ".join(missing) if missing else ""
            if not has_keys:
                detail = (detail + "; " if detail else "") + "set exactly one JWKS file or URL"
            checks.append(Check("auth", "mode", "fail", mode, detail))
        else:
            source = settings.auth.oidc_jwks_file or settings.auth.oidc_jwks_url
            checks.append(
                Check(
                    "auth",
                    "mode",
                    "ok",
                    mode,
                    f"issuer {settings.auth.oidc_issuer}, audience {settings.auth.oidc_audience}, "
                    f"keys from {source}",
                )
            )
    else:
        checks.append(Check("auth", "mode", "ok", mode, "API keys (perimeter admin key-create)"))
    return checks


def run(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    resolver: Resolver | None = system_resolver,
) -> Report:
    env = os.environ if env is None else env
    allowed, invalid = parse_networks(settings.allowed_networks)
    checks: list[Check] = []
    checks.extend(_model_checks(settings))
    checks.extend(_telemetry_checks(env))
    for bad in invalid:
        checks.append(Check("network", "allowed_networks", "fail", bad, "not a valid CIDR"))
    if allowed:
        checks.append(
            Check(
                "network",
                "allowed_networks",
                "ok",
                ", ".join(str(n) for n in allowed),
                "besides loopback and private ranges",
            )
        )
    for ep in endpoints(settings):
        status, why, addresses = classify_host(ep.host, allowed, resolver)
        host = f" (host {ep.host})" if ep.host else ""
        checks.append(Check("endpoint", ep.name, status, ep.display, why + host, addresses))
    checks.extend(_auth_checks(settings))
    return Report(checks)
