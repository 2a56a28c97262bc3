"""Adversarial isolation tests: two tenants (and, inside one tenant, per-document groups) on the
real API, worker, Qdrant and metadata DB.

The attacker knows the victim's document ids, job ids, filenames and metadata values, and tries
every door: GET/DELETE/reindex by id, job ids, crafted query filters, every retrieval mode,
streaming, the OpenAI-compatible route, extra JSON fields. Every response body is searched for
the victim's distinctive strings, ids and names: not one may appear.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import docfactory as df
from tests.conftest import SecureStack, upload_files

pytestmark = pytest.mark.integration

# Words no model or corpus knows, so any hit is a leak, not a coincidence.
ALPHA_SECRETS = ["ZEBRAFLUX", "Quillmarrow", "octarine-vault-7"]
BRAVO_SECRETS = ["QUOKKAVANE", "Brindlewick"]


def upload(stack: SecureStack, headers: dict[str, str], *paths: Path, **data: str) -> Any:
    return upload_files(stack.client, *paths, headers=headers, **data)


class Recorder:
    """Every response an attacker gets, for the final byte search."""

    def __init__(self, stack: SecureStack, headers: dict[str, str]) -> None:
        self.stack = stack
        self.headers = headers
        self.exchanges: list[tuple[str, str]] = []  # (what was sent, what came back)

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.stack.client.request(method, path, headers=self.headers, **kwargs)
        sent = f"{method} {path} {json.dumps(kwargs, default=str)}"
        self.exchanges.append((sent, f"{response.status_code}\n{response.text}"))
        # The stacks here have no LLM: a clean 503 llm_unavailable is an answer, not a crash.
        down = response.status_code == 503 and "llm_unavailable" in response.text
        assert response.status_code < 500 or down, self.exchanges[-1]
        assert "Traceback" not in response.text
        return response

    def assert_never_saw(self, needles: list[str], ids: Sequence[str] = ()) -> None:
        """No needle in any response. ``ids`` may appear only where the attacker sent them in
        that very request (a 404 naming the id that was asked for tells nothing new)."""
        leaks = [
            (needle, sent[:120], body[:300])
            for needle in [*needles, *ids]
            for sent, body in self.exchanges
            if needle.lower() in body.lower()
            and not (needle in ids and needle.lower() in sent.lower())
        ]
        assert not leaks, f"leaked across the boundary: {leaks[:5]}"
        assert self.exchanges


@pytest.fixture
def two_tenants(secure_stack: SecureStack, tmp_path: Path) -> dict[str, Any]:
    s = secure_stack
    alpha = s.key("alpha", ("ingest", "query"), groups=None)
    bravo = s.key("bravo", ("ingest", "query"), groups=None)
    a_docs = [
        df.make_md(
            tmp_path / "alpha-zebraflux-plans.md",
            "ZEBRAFLUX launch plan",
            [("Budget", ["The ZEBRAFLUX budget is held in the octarine-vault-7 account."])],
        ),
        df.make_html(
            tmp_path / "alpha-quillmarrow.html",
            "Quillmarrow memo",
            [("Staff", ["Quillmarrow staff meet every Tuesday about the ZEBRAFLUX rollout."])],
        ),
    ]
    b_docs = [
        df.make_md(
            tmp_path / "bravo-notes.md",
            "QUOKKAVANE notes",
            [("Plan", ["QUOKKAVANE ships in spring; Brindlewick owns the budget."])],
        )
    ]
    shared = df.make_md(tmp_path / "shared.md", "Shared", [("Policy", ["Both tenants hold it."])])
    meta = json.dumps({"project": "falcon", "level": "secret"})
    a = upload(s, alpha, *a_docs, shared, metadata=meta)
    b = upload(s, bravo, *b_docs, shared, metadata=meta)
    assert a.status_code == b.status_code == 202, (a.text, b.text)
    a_up, b_up = a.json()["documents"], b.json()["documents"]
    s.wait_indexed([d["document_id"] for d in a_up + b_up])
    return {"alpha": alpha, "bravo": bravo, "a": a_up, "b": b_up}


def test_other_tenant_cannot_see_touch_or_retrieve_anything(
    secure_stack: SecureStack, two_tenants: dict[str, Any]
) -> None:
    s = secure_stack
    a_docs, b_docs = two_tenants["a"], two_tenants["b"]
    a_ids = [d["document_id"] for d in a_docs]
    a_jobs = [d["job_id"] for d in a_docs]
    a_names = [d["filename"] for d in a_docs if d["filename"] != "shared.md"]
    # Same bytes, two tenants: two separate documents (ids are per tenant).
    assert a_docs[-1]["document_id"] != b_docs[-1]["document_id"]
    attacker = Recorder(s, two_tenants["bravo"])

    listing = attacker("GET", "/v1/documents", params={"limit": 1000}).json()["documents"]
    assert {d["id"] for d in listing} == {d["document_id"] for d in b_docs}
    for status in ("indexed", "queued", "failed"):
        attacker("GET", "/v1/documents", params={"status": status})

    random_id = uuid.uuid4().hex
    missing = attacker("GET", f"/v1/documents/{random_id}").json()
    for doc_id, job_id in zip(a_ids, a_jobs, strict=True):
        r = attacker("GET", f"/v1/documents/{doc_id}")
        assert r.status_code == 404
        # Indistinguishable from an id that does not exist at all.
        assert r.json()["error"]["code"] == missing["error"]["code"] == "document_not_found"
        assert attacker("DELETE", f"/v1/documents/{doc_id}").status_code == 404
        assert attacker("POST", f"/v1/documents/{doc_id}/reindex").status_code == 404
        assert attacker("GET", f"/v1/jobs/{job_id}").status_code == 404
    # Nothing of alpha's was touched by those attempts.
    for doc_id in a_ids:
        doc = s.services.metadata.get_document("alpha", doc_id)
        assert doc is not None and doc.status.value == "indexed"
        assert s.services.store.count_document("alpha", doc_id) == doc.chunk_count

    questions = [
        "What is the ZEBRAFLUX budget held in?",
        "Quillmarrow staff meeting",
        "octarine-vault-7",
    ]
    crafted_filters: list[dict[str, Any] | None] = [
        None,
        {"document_ids": a_ids},
        {"filenames": a_names},
        {"metadata": {"project": "falcon"}},
        {"metadata": {"level": ["secret", "public"]}},
        {"document_ids": a_ids, "filenames": a_names, "metadata": {"project": "falcon"}},
    ]
    for question in questions:
        for flt in crafted_filters:
            for mode in ("hybrid", "dense", "sparse"):
                body: dict[str, Any] = {
                    "question": question,
                    "retrieval_only": True,
                    "mode": mode,
                    "top_k": 50,
                    "min_score": -1.0,
                }
                if flt is not None:
                    body["filters"] = flt
                sources = attacker("POST", "/v1/query", json=body).json()["sources"]
                assert not {h["document_id"] for h in sources} & set(a_ids)
        # The answering paths too: the LLM is down in this stack, so they answer 503 with the
        # retrieved sources in details (or an SSE error event) - those must be bravo's only.
        attacker("POST", "/v1/query", json={"question": question, "min_score": -1.0})
        attacker(
            "POST", "/v1/query", json={"question": question, "min_score": -1.0, "stream": True}
        )
        attacker(
            "POST",
            "/v1/chat/completions",
            json={"model": "perimeter", "messages": [{"role": "user", "content": question}]},
        )

    # The tenant can never be chosen by the client: extra fields are refused outright.
    for body in [
        {"question": "x", "tenant_id": "alpha"},
        {"question": "x", "filters": {"tenant_id": "alpha"}},
        {"question": "x", "filters": {"groups": ["hr"]}},
        {"question": "x", "filters": {"document_ids": a_ids, "tenant": "alpha"}},
    ]:
        assert attacker("POST", "/v1/query", json=body).status_code == 422
    attacker("GET", "/v1/documents", params={"tenant_id": "alpha"})
    attacker("GET", f"/v1/documents/{a_ids[0]}", params={"tenant_id": "alpha"})

    attacker.assert_never_saw(ALPHA_SECRETS + a_names, ids=a_ids + a_jobs)

    # Below the API: a search in bravo's scope returns only bravo's points.
    vector = s.services.embedder.encode_queries(["ZEBRAFLUX octarine-vault-7"])[0].dense
    from perimeter.domain import SearchFilter

    hits = s.services.store.dense_search(vector, SearchFilter(tenant_id="bravo"), 1000)
    assert hits and not {h.document_id for h in hits} & set(a_ids)
    payloads = json.dumps([h.text for h in hits])
    assert not any(secret in payloads for secret in ALPHA_SECRETS)


def test_shared_blob_survives_the_other_tenants_delete_and_deleted_docs_vanish(
    secure_stack: SecureStack, two_tenants: dict[str, Any]
) -> None:
    s = secure_stack
    alpha, bravo = two_tenants["alpha"], two_tenants["bravo"]
    a_shared, b_shared = two_tenants["a"][-1], two_tenants["b"][-1]
    a_row = s.services.metadata.get_document("alpha", a_shared["document_id"])
    assert a_row is not None
    blob = s.services.blobs.path_for(a_row.content_hash)
    assert blob.exists()

    assert (
        s.client.delete(f"/v1/documents/{a_shared['document_id']}", headers=alpha).status_code
        == 204
    )
    assert blob.exists(), "alpha's delete removed a file bravo still references"
    assert s.services.store.count_document("alpha", a_shared["document_id"]) == 0
    r = s.client.get(f"/v1/documents/{b_shared['document_id']}", headers=bravo)
    assert r.status_code == 200 and r.json()["status"] == "indexed"
    body = {"question": "Both tenants hold it", "retrieval_only": True, "min_score": -1.0}
    hits = s.client.post("/v1/query", json=body, headers=bravo).json()["sources"]
    assert b_shared["document_id"] in {h["document_id"] for h in hits}
    hits = s.client.post("/v1/query", json=body, headers=alpha).json()["sources"]
    assert a_shared["document_id"] not in {h["document_id"] for h in hits}

    # A deleted document is gone for its own tenant too, in every path.
    victim = two_tenants["a"][0]["document_id"]
    assert s.client.delete(f"/v1/documents/{victim}", headers=alpha).status_code == 204
    recorder = Recorder(s, alpha)
    for mode in ("hybrid", "dense", "sparse"):
        q = {**body, "question": "ZEBRAFLUX budget octarine-vault-7", "mode": mode}
        recorder("POST", "/v1/query", json=q)
        recorder("POST", "/v1/query", json={**q, "filters": {"document_ids": [victim]}})
    recorder("GET", "/v1/documents")
    recorder("GET", f"/v1/documents/{victim}")
    recorder.assert_never_saw(["octarine-vault-7"], ids=[victim])

    assert (
        s.client.delete(f"/v1/documents/{b_shared['document_id']}", headers=bravo).status_code
        == 204
    )
    assert not blob.exists(), "the last reference is gone: the file must go too"


def test_group_acl_hides_restricted_documents_inside_a_tenant(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    s = secure_stack
    hr = s.key("acme", ("ingest", "query"), groups=["hr"])
    eng = s.key("acme", ("ingest", "query"), groups=["eng"])
    plain = s.key("acme", ("ingest", "query"), groups=[])
    everything = s.key("acme", ("ingest", "query"), groups=None)

    payroll = df.make_md(
        tmp_path / "payroll.md",
        "Payroll bands",
        [("Bands", ["PAYROLLSECRET band Z9 earns ninety thousand crowns."])],
    )
    canteen = df.make_md(tmp_path / "canteen.md", "Canteen", [("Menu", ["Soup daily."])])
    r = upload(s, hr, payroll, groups='["hr"]')
    assert r.status_code == 202, r.text
    secret_doc = r.json()["documents"][0]
    public_doc = upload(s, plain, canteen).json()["documents"][0]
    s.wait_indexed([secret_doc["document_id"], public_doc["document_id"]])
    sid = secret_doc["document_id"]

    for outsider in (plain, eng):
        rec = Recorder(s, outsider)
        listed = rec("GET", "/v1/documents").json()["documents"]
        assert [d["id"] for d in listed] == [public_doc["document_id"]]
        for method, path in [
            ("GET", f"/v1/documents/{sid}"),
            ("DELETE", f"/v1/documents/{sid}"),
            ("POST", f"/v1/documents/{sid}/reindex"),
            ("GET", f"/v1/jobs/{secret_doc['job_id']}"),
        ]:
            r = rec(method, path)
            # 404, never 403: a 403 would confirm the document exists.
            assert r.status_code == 404, (method, path, r.text)
        for mode in ("hybrid", "dense", "sparse"):
            for flt in (None, {"document_ids": [sid]}, {"filenames": ["payroll.md"]}):
                q: dict[str, Any] = {
                    "question": "Which band earns ninety thousand crowns? PAYROLLSECRET",
                    "retrieval_only": True,
                    "mode": mode,
                    "min_score": -1.0,
                    "top_k": 50,
                }
                if flt:
                    q["filters"] = flt
                rec("POST", "/v1/query", json=q)
        rec.assert_never_saw(["PAYROLLSECRET", "Z9", "payroll.md"], ids=[sid, secret_doc["job_id"]])
    assert s.services.metadata.get_document("acme", sid) is not None  # the delete did nothing

    for insider in (hr, everything):
        listed = s.client.get("/v1/documents", headers=insider).json()["documents"]
        assert {d["id"] for d in listed} == {sid, public_doc["document_id"]}
        q = {"question": "Which band earns ninety thousand crowns?", "retrieval_only": True}
        hits = s.client.post("/v1/query", json=q, headers=insider).json()["sources"]
        assert hits[0]["document_id"] == sid

    # Restricting to a group you are not in is refused: no planting content in HR's answers.
    r = upload(s, plain, canteen, groups='["hr"]')
    assert r.status_code == 403 and r.json()["error"]["code"] == "group_not_allowed"
    for bad in ('"hr"', '{"hr": 1}', '["__public__"]', '["a\\"b"]', "[1]", "not json"):
        r = upload(s, hr, canteen, groups=bad)
        assert r.status_code == 400, (bad, r.text)
    # The same bytes as the hidden document, uploaded by an outsider: refused, not "duplicate"
    # with the hidden id.
    r = upload(s, plain, payroll)
    assert r.status_code == 409, r.text
    assert sid not in r.text
    assert len(s.services.metadata.list_documents("acme")) == 2
    assert not list((s.services.blobs.root / "tmp").iterdir())


def test_listing_pages_count_only_visible_documents(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    s = secure_stack
    hr = s.key("acme", ("ingest", "query"), groups=["hr", "ops"])
    plain = s.key("acme", ("ingest", "query"), groups=[])
    visible: set[str] = set()
    for i in range(6):
        path = df.make_md(tmp_path / f"d{i}.md", f"Doc {i}", [("S", [f"Document number {i}."])])
        restricted = i % 2 == 0
        r = upload(s, hr, path, groups='["hr"]' if restricted else "[]")
        doc_id = r.json()["documents"][0]["document_id"]
        if not restricted:
            visible.add(doc_id)
    pages: list[str] = []
    for offset in range(0, 6):
        page = s.client.get(
            "/v1/documents", params={"limit": 1, "offset": offset}, headers=plain
        ).json()["documents"]
        pages.extend(d["id"] for d in page)
    assert len(pages) == len(set(pages)) == 3
    assert set(pages) == visible


# -- the SQL side of the ACL and the audit log on PostgreSQL --------------------------------------


def test_acl_listing_and_append_only_audit_on_both_databases(sql_url: str) -> None:
    from perimeter.audit import AuditLog
    from perimeter.auth.acl import list_visible_documents
    from perimeter.auth.api_keys import ApiKeyStore
    from perimeter.backends.sql_metadata import SqlMetadataStore

    store = SqlMetadataStore(sql_url)
    try:
        store.create_schema()
        ApiKeyStore(store)  # tables registered
        groups_by_doc = {
            "pub": [],
            "hr": ["hr"],
            "hr_eu": ["hr/eu", "hr"],
            "under": ["h_r"],  # LIKE's "_" wildcard must not match "hr"
            "pct": ["%"],
            "uni": ["Équipe Zürich"],
            "other": ["hrx"],
        }
        for name, groups in groups_by_doc.items():
            store.create_document_with_job(
                document_id=name,
                tenant_id="t",
                content_hash=name.ljust(64, "0"),
                filename=f"{name}.md",
                content_type="text/markdown",
                size_bytes=1,
                metadata={},
                groups=groups,
            )
        store.create_document_with_job(
            document_id="foreign", tenant_id="u", content_hash="f" * 64, filename="f.md",
            content_type="text/markdown", size_bytes=1, metadata={}, groups=[],
        )  # fmt: skip

        def ids(groups: list[str] | None) -> set[str]:
            return {d.id for d in list_visible_documents(store, "t", groups, limit=1000)}

        assert ids(None) == set(groups_by_doc)
        assert ids([]) == {"pub"}
        assert ids(["hr"]) == {"pub", "hr", "hr_eu"}
        assert ids(["hr/eu"]) == {"pub", "hr_eu"}
        assert ids(["h_r"]) == {"pub", "under"}
        assert ids(["%"]) == {"pub", "pct"}
        assert ids(["Équipe Zürich"]) == {"pub", "uni"}
        assert ids(["nobody"]) == {"pub"}

        audit = AuditLog(store)
        audit.record(tenant_id="t", actor="key:x", auth_method="api_key", action="query")
        assert [e.action for e in audit.entries(tenant_id="t")] == ["query"]
        for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as c:
                c.execute(sa.text(statement))
        assert len(audit.entries()) == 1
    finally:
        store.close()
