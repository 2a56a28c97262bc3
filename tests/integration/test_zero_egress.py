"""Zero egress, proved: ingest and query with every socket path guarded.

The guard (perimeter/egress_guard.py) patches socket connect / connect_ex / sendto,
create_connection and the name lookups; every non-loopback destination is refused *and
recorded*, with the stack that tried. The tests run real work under it and assert that the
record is empty, printing every attempt otherwise:

* in-process, around the ``stack`` fixture (API + Celery worker on Redis + local Qdrant +
  MiniLM + unstructured) ingesting every supported format, then retrieval and the answer paths;
* the same with the packaged SmolLM2 answering (``llm``);
* cold: ``perimeter up`` (the embedded default) started as a fresh process with the guard
  installed by ``sitecustomize`` before anything is imported, so model loading and library
  imports are covered too, in every Python process it starts (the LLM server included).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from perimeter.egress_guard import EgressGuard
from perimeter.polling import wait_until_final
from tests import docfactory as df
from tests.conftest import Stack, free_port, stop_gracefully, wait_until_ready

pytestmark = pytest.mark.integration


@pytest.fixture
def guard() -> Iterator[EgressGuard]:
    # Requested before ``stack`` in each test, so building the services is guarded too.
    g = EgressGuard().install()
    try:
        yield g
    finally:
        g.uninstall()


def every_format(folder: Path) -> list[Path]:
    return [
        df.make_pdf(folder / "manual.pdf", [["Boilers", "The boiler is serviced every March."]]),
        df.make_docx(folder / "policy.docx", [("Leave", ["Staff get 28 days of leave."])]),
        df.make_pptx(folder / "deck.pptx", [("Roadmap", ["Launch the glacier probe in May."])]),
        df.make_xlsx(folder / "stock.xlsx", {"Stock": [["item", "count"], ["lanterns", 14]]}),
        df.make_html(folder / "faq.html", "FAQ", [("Parking", ["Parking is behind building C."])]),
        df.make_md(folder / "notes.md", "Notes", [("Tea", ["Green tea steeps at 80 degrees."])]),
        df.make_txt(folder / "plain.txt", ["Bicycles are stored in the basement."]),
        df.make_csv(folder / "rota.csv", [["day", "cook"], ["Monday", "Ines"]]),
        df.make_eml(folder / "mail.eml", "Fire drill", "The fire drill is on Friday at ten."),
    ]


def ingest(stack: Stack, paths: list[Path]) -> list[dict[str, Any]]:
    handles = [p.open("rb") for p in paths]
    try:
        files = [
            ("files", (p.name, h, "application/octet-stream"))
            for p, h in zip(paths, handles, strict=True)
        ]
        response = stack.client.post("/v1/documents", files=files)
    finally:
        for h in handles:
            h.close()
    assert response.status_code == 202, response.text
    ids = [d["document_id"] for d in response.json()["documents"]]
    final = stack.wait_indexed(ids, timeout_s=240)
    assert all(d["status"] == "indexed" for d in final.values()), final
    return list(final.values())


def test_the_guard_refuses_and_records_outbound_attempts(guard: EgressGuard) -> None:
    """The instrument itself: it must catch what it claims to catch, and let loopback by."""
    with pytest.raises(OSError):
        urllib.request.urlopen("http://example.org/", timeout=2)
    with pytest.raises(OSError), socket.socket() as s:
        s.connect(("203.0.113.7", 443))
    with pytest.raises(OSError):
        socket.getaddrinfo("telemetry.example.com", 443)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError):
        udp.sendto(b"\x00", ("192.0.2.53", 53))
    seen = {(a.function, a.host) for a in guard.attempts}
    assert {
        ("create_connection", "example.org"),
        ("connect", "203.0.113.7"),
        ("getaddrinfo", "telemetry.example.com"),
        ("sendto", "192.0.2.53"),
    } <= seen
    assert "203.0.113.7" in guard.report()
    guard.attempts.clear()
    with socket.create_connection(("127.0.0.1", 6379), timeout=2):
        pass
    socket.getaddrinfo("localhost", 80)
    assert guard.attempts == []


def test_ingest_and_query_make_no_outbound_connection(
    guard: EgressGuard, stack: Stack, tmp_path: Path
) -> None:
    docs = ingest(stack, every_format(tmp_path))
    assert len(docs) == 9
    q = {"question": "When is the boiler serviced?", "retrieval_only": True}
    hits = stack.client.post("/v1/query", json=q).json()["sources"]
    assert hits and "March" in hits[0]["snippet"]
    for mode in ("dense", "sparse"):
        assert stack.client.post("/v1/query", json={**q, "mode": mode}).status_code == 200
    # The answer paths, with the LLM down: degraded answer, streamed error.
    degraded = {"question": "Where is parking?", "allow_degraded": True}
    r = stack.client.post("/v1/query", json=degraded)
    assert r.status_code == 200 and r.json()["degraded"] is True
    assert stack.client.post("/v1/query", json={**degraded, "stream": True}).status_code == 200
    assert guard.attempts == [], guard.report()


@pytest.mark.llm
def test_grounded_answer_from_the_packaged_llm_makes_no_outbound_connection(
    guard: EgressGuard, stack: Stack, tmp_path: Path
) -> None:
    ingest(stack, every_format(tmp_path)[:3])
    r = stack.client.post("/v1/query", json={"question": "When is the boiler serviced?"})
    assert r.status_code == 200, r.text
    assert r.json()["answer"]
    streamed = stack.client.post(
        "/v1/query", json={"question": "How many days of leave do staff get?", "stream": True}
    )
    assert "event: answer" in streamed.text
    assert guard.attempts == [], guard.report()


SITECUSTOMIZE = """\
from perimeter.egress_guard import install_from_env

install_from_env()
"""


@pytest.mark.e2e
@pytest.mark.llm
def test_cold_start_of_the_embedded_default_makes_no_outbound_connection(
    tmp_path: Path,
) -> None:
    """``perimeter up`` in a fresh process, guarded from its first import: model loads, the
    unstructured import, the LLM server child, ingest and a grounded answer."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    reports = tmp_path / "egress"
    reports.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), str(Path.cwd())]),
        "PERIMETER_EGRESS_GUARD_REPORT": str(reports),
        "PERIMETER_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "PERIMETER_API__PORT": str(port),
        "PERIMETER_LLM__EMBEDDED_PORT": str(free_port()),
        "PERIMETER_LLM__EMBEDDED_THREADS": "2",
    }
    # The embedded default exactly: SQLite broker, no telemetry switch preset by the test run.
    for key in ("PERIMETER_BROKER__URL", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK",
                "SCARF_NO_ANALYTICS"):  # fmt: skip
        env.pop(key, None)
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from perimeter.cli import main; main()", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(proc, url, log_path, timeout_s=240)
            paths = every_format(tmp_path)
            with httpx.Client(base_url=url, timeout=120) as client:
                handles = [p.open("rb") for p in paths]
                try:
                    files = [("files", (p.name, h)) for p, h in zip(paths, handles, strict=True)]
                    up = client.post("/v1/documents", files=files)
                finally:
                    for h in handles:
                        h.close()
                assert up.status_code == 202, up.text
                final = wait_until_final(
                    [d["document_id"] for d in up.json()["documents"]],
                    lambda doc_id: client.get(f"/v1/documents/{doc_id}").json(),
                    lambda doc: str(doc["status"]),
                    timeout_s=240,
                )
                assert all(d["status"] == "indexed" for d in final.values()), final
                answer = client.post("/v1/query", json={"question": "When is the boiler serviced?"})
                assert answer.status_code == 200, answer.text
                assert answer.json()["sources"]
        finally:
            stop_gracefully(proc, timeout_s=60)

    found = [json.loads(p.read_text()) for p in sorted(reports.glob("egress-*.json"))]
    pids = {r["pid"] for r in found}
    # The `up` process and the LLM server it started were both guarded.
    assert proc.pid in pids and len(pids) >= 2, (pids, log_path.read_text()[-2000:])
    attempts = [
        f"pid {r['pid']}: {a['function']}({a['host']}:{a['port']})\n{a['stack']}"
        for r in found
        for a in r["attempts"]
    ]
    assert not attempts, "outbound attempts:\n" + "\n".join(attempts)


# -- perimeter doctor -------------------------------------------------------------------------


def run_doctor(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Any:
    from typer.testing import CliRunner

    from perimeter.cli import app
    from perimeter.settings import get_settings

    for key in list(os.environ):
        if key.startswith("PERIMETER_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["doctor", "--json", *args], catch_exceptions=False)
    finally:
        get_settings.cache_clear()


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {f"{c['area']}:{c['name']}": c for c in report["checks"]}


def test_doctor_passes_the_embedded_default_and_names_where_models_load_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = run_doctor(monkeypatch, {"PERIMETER_STORAGE__DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.stdout
    checks = checks_of(result)
    embedder = checks["model:embedder (sentence-transformers)"]
    assert embedder["status"] == "ok" and Path(embedder["value"]).is_dir()
    assert Path(checks["model:LLM (embedded)"]["value"]).is_file()
    for name in ("metadata database", "vector store", "broker"):
        assert checks[f"endpoint:{name}"]["detail"] == "local (no network)"
    assert checks["endpoint:LLM"]["detail"].startswith("loopback")
    assert all(c["status"] == "ok" for k, c in checks.items() if k.startswith("telemetry:"))
    assert checks["auth:mode"]["status"] == "warn"  # disabled: said loudly, fine on loopback


def test_doctor_classifies_production_endpoints_and_masks_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "PERIMETER_DATABASE__URL": "postgresql+psycopg://perimeter:dbpass123@10.1.2.3:5432/p",
        "PERIMETER_QDRANT__URL": "http://192.168.10.5:6333",
        "PERIMETER_BROKER__URL": "redis://:redispass456@[fd00::5]:6379/0",
        "PERIMETER_LLM__BASE_URL": "http://vllm:8000/v1",
        "PERIMETER_AUTH__MODE": "api_key",
        "PERIMETER_API__HOST": "0.0.0.0",
    }
    result = run_doctor(monkeypatch, env, "--no-resolve")
    assert result.exit_code == 0, result.stdout
    assert "dbpass123" not in result.stdout and "redispass456" not in result.stdout
    checks = checks_of(result)
    assert checks["endpoint:metadata database"]["detail"].startswith("private range")
    assert checks["endpoint:vector store"]["detail"].startswith("private range")
    assert checks["endpoint:broker"]["detail"].startswith("private range")
    assert checks["endpoint:LLM"]["status"] == "warn"  # a compose service name, not resolved
    assert checks["auth:mode"]["status"] == "ok"


@pytest.mark.parametrize(
    ("env", "failing"),
    [
        ({"PERIMETER_LLM__BASE_URL": "https://104.18.6.192/v1"}, "endpoint:LLM"),
        ({"PERIMETER_QDRANT__URL": "http://169.254.169.254:6333"}, "endpoint:vector store"),
        ({"PERIMETER_BROKER__URL": "redis://100.64.0.9:6379/0"}, "endpoint:broker"),
        ({"HF_HUB_OFFLINE": "0"}, "telemetry:HF_HUB_OFFLINE"),
        ({"ANONYMIZED_TELEMETRY": "true"}, "telemetry:ANONYMIZED_TELEMETRY"),
        ({"PERIMETER_EMBEDDING__MODEL": "BAAI/bge-m3"}, "model:embedder (sentence-transformers)"),
        ({"PERIMETER_API__HOST": "0.0.0.0"}, "auth:mode"),  # no auth on an open bind
        ({"PERIMETER_ALLOWED_NETWORKS": '["not-a-cidr"]'}, "network:allowed_networks"),
    ],
    ids=[
        "public-llm",
        "link-local",
        "cgnat",
        "hf-online",
        "chroma-telemetry",
        "hub-model",
        "open-bind-no-auth",
        "bad-cidr",
    ],
)
def test_doctor_fails_on_anything_outside_the_perimeter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], failing: str
) -> None:
    result = run_doctor(
        monkeypatch, {"PERIMETER_STORAGE__DATA_DIR": str(tmp_path), **env}, "--no-resolve"
    )
    assert result.exit_code == 1, result.stdout
    checks = checks_of(result)
    assert checks[failing]["status"] == "fail", checks[failing]
    assert [k for k, c in checks.items() if c["status"] == "fail"] == [failing]


def test_doctor_accepts_an_allow_listed_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "PERIMETER_STORAGE__DATA_DIR": str(tmp_path),
        "PERIMETER_BROKER__URL": "redis://100.64.0.9:6379/0",
        "PERIMETER_ALLOWED_NETWORKS": '["100.64.0.0/10"]',
    }
    result = run_doctor(monkeypatch, env, "--no-resolve")
    assert result.exit_code == 0, result.stdout
    assert checks_of(result)["endpoint:broker"]["detail"].startswith("allow-listed")
