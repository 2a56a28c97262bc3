"""Static checks of the production topology in docker-compose.yml.

Nothing here runs a container: the file is parsed with PyYAML and checked against the rules the
deployment relies on (health-gated startup, pinned images, no egress, offline/no-telemetry env,
env names that the settings really read). If the docker CLI with its compose plugin is present,
`docker compose config -q` also validates the file against the Compose spec (no daemon needed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from perimeter.settings import Settings

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

EXPECTED_SERVICES = {"api", "worker", "redis", "qdrant", "postgres", "vllm"}
APP_SERVICES = ("api", "worker")
BACKEND = "backend"

# Values the interpolation below uses for variables the operator provides in .env.
TEST_ENV = {"POSTGRES_PASSWORD": "test-password"}

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def interpolate(value: str, env: dict[str, str] = TEST_ENV) -> str:
    """Resolve Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""

    def repl(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", "-"):
            if current is None or (op == ":-" and current == ""):
                return arg or ""
            return current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise KeyError(f"required variable {name} is unset: {arg}")
            return current
        return current or ""

    return _INTERPOLATION.sub(repl, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs = compose.get("services")
    assert isinstance(svcs, dict) and svcs, "no services declared"
    return svcs


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list of K=V."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str] = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def networks_of(service: dict[str, Any]) -> set[str]:
    nets = service.get("networks")
    if nets is None:
        return {"default"}
    return set(nets) if isinstance(nets, (list, dict)) else set()


def command_args(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return [str(a) for a in cmd] if isinstance(cmd, list) else str(cmd).split()


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """'repo[:tag][@digest]' -> (repo, tag, digest); a registry port is not a tag."""
    ref, _, digest = ref.partition("@")
    last_segment = ref.rsplit("/", 1)[-1]
    if ":" in last_segment:
        repo, _, tag = ref.rpartition(":")
        return repo, tag, digest or None
    return ref, None, digest or None


# --- services and health ------------------------------------------------------------------------


def test_expected_services_exist(services: dict[str, Any]) -> None:
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_optional_services_sit_behind_a_profile(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name not in EXPECTED_SERVICES:
            assert svc.get("profiles"), f"{name}: extra services must be opt-in via `profiles`"
    if "flower" in services:
        assert "ops" in services["flower"]["profiles"]


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert isinstance(hc, dict), f"{name}: no healthcheck"
        assert not hc.get("disable"), f"{name}: healthcheck disabled"
        test = hc.get("test")
        assert test, f"{name}: healthcheck has no test"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must start CMD"
            assert len(test) > 1 and all(str(a).strip() for a in test[1:]), name
        else:
            assert str(test).strip() not in ("", "NONE"), name


def test_specific_healthchecks(services: dict[str, Any]) -> None:
    assert "http://127.0.0.1:8000/healthz" in healthcheck_text(services["api"])
    assert "python" in healthcheck_text(services["api"]), "slim image has no curl"
    worker_test = services["worker"]["healthcheck"]["test"]
    assert worker_test[0] == "CMD"
    assert worker_test[1:] == ["perimeter", "worker-health"]
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    assert "/dev/tcp/127.0.0.1/6333" in healthcheck_text(services["qdrant"]), "no curl in qdrant"
    assert "pg_isready" in healthcheck_text(services["postgres"])
    assert "/health" in healthcheck_text(services["vllm"])


def test_app_commands(services: dict[str, Any]) -> None:
    api_cmd = command_args(services["api"])
    assert api_cmd[:2] == ["perimeter", "api"]
    assert "--host" in api_cmd and api_cmd[api_cmd.index("--host") + 1] == "0.0.0.0"
    worker_cmd = command_args(services["worker"])
    assert worker_cmd[:2] == ["perimeter", "worker"]
    assert "--concurrency" in worker_cmd


# --- images -------------------------------------------------------------------------------------


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if image is None:
            continue
        repo, tag, digest = split_image(interpolate(str(image)))
        assert repo, f"{name}: empty image name"
        assert tag or digest, f"{name}: image {image!r} has no tag (means :latest)"
        if tag is not None:
            assert tag != "latest", f"{name}: image {image!r} uses :latest"
            assert any(ch.isdigit() for ch in tag), f"{name}: tag {tag!r} is not a version"


def test_app_services_are_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build, f"{name}: the application image must be built from the repo"
        if isinstance(build, str):
            build = {"context": build}
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        assert (REPO_ROOT / context / dockerfile).is_file(), f"{name}: {dockerfile} missing"
    assert services["api"]["image"] == services["worker"]["image"], "api and worker: one image"


def test_dockerfile_basics() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "python:3.11-slim" in text
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", text, re.MULTILINE), "image must not run as root"
    assert '"perimeter", "api", "--host", "0.0.0.0", "--port", "8000"' in text
    # unstructured downloads this spaCy model at run time when it is missing: no egress inside.
    assert "en_core_web_sm" in text, "the image must pre-install spaCy's en_core_web_sm"


# --- startup order ------------------------------------------------------------------------------


def test_depends_on_waits_for_healthy(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on")
        if deps is None:
            continue
        assert isinstance(deps, dict), f"{name}: depends_on must be the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name}: depends on unknown service {dep}"
            assert isinstance(spec, dict), f"{name} -> {dep}: no condition"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_app_services_wait_for_their_stores(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        deps = set(services[name].get("depends_on") or {})
        assert {"redis", "qdrant", "postgres"} <= deps, f"{name}: depends_on {sorted(deps)}"


# --- networks and ports -------------------------------------------------------------------------


def test_backend_network_is_internal_and_everyone_is_on_it(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    networks = compose.get("networks") or {}
    assert BACKEND in networks, "no backend network"
    assert (networks[BACKEND] or {}).get("internal") is True, "backend must be internal: true"
    for name, svc in services.items():
        assert BACKEND in networks_of(svc), f"{name}: not on the {BACKEND} network"


def test_only_api_reaches_a_non_internal_network(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = compose.get("networks") or {}

    def is_internal(net: str) -> bool:
        return bool((declared.get(net) or {}).get("internal"))

    for name, svc in services.items():
        nets = networks_of(svc)
        for net in nets:
            assert net in declared, f"{name}: network {net} is not declared"
        external = {net for net in nets if not is_internal(net)}
        if name == "api":
            assert external, "api needs a non-internal network for its published port"
        else:
            assert not external, f"{name}: on non-internal network(s) {sorted(external)}"


def test_only_api_publishes_ports(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name != "api":
            assert not svc.get("ports"), f"{name}: must not publish ports"
    ports = [interpolate(str(p)) for p in services["api"].get("ports") or []]
    assert ports, "api publishes no port"
    for port in ports:
        parts = port.split(":")
        assert len(parts) == 3, f"api port {port!r}: bind it to an explicit host interface"
        assert parts[1:] == ["8000", "8000"], port


# --- environment --------------------------------------------------------------------------------

TELEMETRY_OFF = {
    "api": {
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "false",
    },
    "qdrant": {"QDRANT__TELEMETRY_DISABLED": "true"},
    "vllm": {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"},
}
TELEMETRY_OFF["worker"] = TELEMETRY_OFF["api"]


@pytest.mark.parametrize("service", sorted(TELEMETRY_OFF))
def test_telemetry_off_and_offline(services: dict[str, Any], service: str) -> None:
    env = env_of(services[service])
    for key, expected in TELEMETRY_OFF[service].items():
        assert key in env, f"{service}: {key} not set"
        assert env[key].lower() == expected, f"{service}: {key}={env[key]!r}, want {expected!r}"


def test_hub_offline_where_models_are_loaded(services: dict[str, Any]) -> None:
    for name in ("api", "worker", "vllm"):
        assert env_of(services[name]).get("HF_HUB_OFFLINE") == "1", name


def _settings_field(env_name: str) -> tuple[str, str] | None:
    """PERIMETER_<SUB>__<FIELD> -> (sub, field) when Settings has it, else None."""
    rest = env_name.removeprefix("PERIMETER_")
    parts = rest.lower().split("__")
    if len(parts) != 2:
        return None
    sub, field = parts
    sub_info = Settings.model_fields.get(sub)
    if sub_info is None:
        return None
    model = sub_info.annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    return (sub, field) if field in model.model_fields else None


def test_every_perimeter_env_var_is_a_real_setting(services: dict[str, Any]) -> None:
    seen = 0
    for name, svc in services.items():
        for key in env_of(svc):
            if key.startswith("PERIMETER_"):
                seen += 1
                assert _settings_field(key), f"{name}: {key} is not a field of Settings"
    assert seen, "no PERIMETER_ settings in the compose file"


def test_no_stray_perimeter_names_anywhere_in_the_file() -> None:
    """Also catches PERIMETER_ names in list-form env, command lines or interpolations."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for key in set(re.findall(r"\bPERIMETER_[A-Z0-9_]+", text)):
        assert _settings_field(key), f"{key} is not a field of Settings"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_env_builds_valid_settings(
    services: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env the app containers get parses into Settings (types, literals) and points at the
    compose services."""
    for key in list(os.environ):
        if key.startswith("PERIMETER_"):
            monkeypatch.delenv(key)
    env = env_of(services[service])
    for key, value in env.items():
        if key.startswith("PERIMETER_"):
            monkeypatch.setenv(key, interpolate(value))

    settings = Settings()
    assert settings.qdrant.url == "http://qdrant:6333"
    assert settings.broker.url == "redis://redis:6379/0"
    assert settings.database.url is not None
    assert settings.database.url.startswith("postgresql+psycopg://perimeter:")
    assert settings.database.url.endswith("@postgres:5432/perimeter")
    assert TEST_ENV["POSTGRES_PASSWORD"] in settings.database.url
    assert settings.llm.base_url == "http://vllm:8000/v1"
    assert settings.embedding.model == "/models/bge-m3"
    assert settings.embedding.kind == "bge-m3"
    assert str(settings.storage.data_dir) == "/data"
    assert not settings.is_embedded
    # Redis redelivers unacked tasks after the visibility timeout: it must exceed the hard limit.
    assert settings.broker.visibility_timeout_s > settings.broker.task_time_limit_s
    assert settings.broker.task_time_limit_s > settings.broker.task_soft_time_limit_s


def test_postgres_password_is_required(services: dict[str, Any]) -> None:
    pg_env = env_of(services["postgres"])
    assert pg_env.get("POSTGRES_PASSWORD", "").startswith("${POSTGRES_PASSWORD:?")
    for name in APP_SERVICES:
        url = env_of(services[name])["PERIMETER_DATABASE__URL"]
        assert "${POSTGRES_PASSWORD:?" in url, f"{name}: database URL must require the password"
        with pytest.raises(KeyError):
            interpolate(url, env={})


def test_llm_model_name_matches_what_vllm_serves(services: dict[str, Any]) -> None:
    args = [interpolate(a) for a in command_args(services["vllm"])]
    assert "--served-model-name" in args and "--max-model-len" in args
    served = args[args.index("--served-model-name") + 1]
    assert "/models/llama" in args
    for name in APP_SERVICES:
        assert interpolate(env_of(services[name])["PERIMETER_LLM__MODEL"]) == served, name


def test_redis_persists_the_queue(services: dict[str, Any]) -> None:
    args = command_args(services["redis"])
    assert "--appendonly" in args and args[args.index("--appendonly") + 1] == "yes"


# --- volumes and GPU ----------------------------------------------------------------------------


def _volume_mounts(svc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for each mount, short or long syntax."""
    out = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((str(vol.get("source", "")), str(vol["target"]), bool(vol.get("read_only"))))
        else:
            parts = str(vol).split(":")
            if len(parts) == 1:  # anonymous volume
                out.append(("", parts[0], False))
            else:
                mode = parts[2] if len(parts) > 2 else "rw"
                out.append((parts[0], parts[1], "ro" in mode.split(",")))
    return out


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    assert {"data", "qdrant_storage", "postgres_data", "redis_data", "models"} <= declared
    for name, svc in services.items():
        for source, target, _ in _volume_mounts(svc):
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source!r} ({target}) not declared"


def test_models_are_mounted_read_only(services: dict[str, Any]) -> None:
    for name in ("api", "worker", "vllm"):
        mounts = {target: (source, ro) for source, target, ro in _volume_mounts(services[name])}
        assert "/models" in mounts, f"{name}: /models not mounted"
        assert mounts["/models"][1], f"{name}: /models must be read-only"
    for name in APP_SERVICES:
        mounts = {target: source for source, target, _ in _volume_mounts(services[name])}
        assert mounts.get("/data") == "data", f"{name}: uploads volume not at /data"


def test_stateful_services_keep_their_data(services: dict[str, Any]) -> None:
    expected = {
        "redis": "redis_data",
        "qdrant": "qdrant_storage",
        "postgres": "postgres_data",
    }
    for name, volume in expected.items():
        assert volume in {s for s, _, _ in _volume_mounts(services[name])}, name


def test_vllm_reserves_a_gpu(services: dict[str, Any]) -> None:
    reservations = services["vllm"].get("deploy", {}).get("resources", {}).get("reservations", {})
    devices = reservations.get("devices")
    assert devices, "vllm reserves no device"
    assert any(
        d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or []) for d in devices
    ), devices


# --- the compose CLI, when present --------------------------------------------------------------


def _compose_cli_missing() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "the docker CLI is not installed"
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed to run: {exc}"
    if probe.returncode != 0:
        return "the docker compose plugin is not installed (`docker compose version` failed)"
    return None


def test_docker_compose_config_validates() -> None:
    reason = _compose_cli_missing()
    if reason:
        pytest.skip(f"cannot run `docker compose config`: {reason}")
    env = {**os.environ, **TEST_ENV}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "ops", "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr or result.stdout
