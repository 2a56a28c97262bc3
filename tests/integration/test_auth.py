"""Authentication and authorisation through the real API: API keys (hashed, shown once, scoped,
revocable, from the admin CLI), OIDC JWTs checked against a JWKS file and a loopback JWKS URL
(a locally generated RSA key), and the audit log (who did what, which chunks were served,
never a secret, append-only)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from tests import docfactory as df
from tests.conftest import SecureStack, free_port, upload_files

pytestmark = pytest.mark.integration

ISSUER = "https://idp.perimeter.internal/realms/acme"
AUDIENCE = "perimeter-api"


def upload(stack: SecureStack, headers: dict[str, str], *paths: Path, **data: str) -> Any:
    return upload_files(stack.client, *paths, headers=headers, **data)


def ask(stack: SecureStack, headers: dict[str, str], question: str, **extra: Any) -> Any:
    body = {"question": question, "retrieval_only": True, "min_score": -1.0, **extra}
    return stack.client.post("/v1/query", json=body, headers=headers)


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert "Traceback" not in response.text


# -- API keys ---------------------------------------------------------------------------------


def test_no_credentials_is_401_and_wrong_scope_is_403(secure_stack: SecureStack) -> None:
    s = secure_stack
    for method, path in [
        ("GET", "/v1/documents"),
        ("GET", "/v1/documents/abc"),
        ("DELETE", "/v1/documents/abc"),
        ("GET", "/v1/jobs/abc"),
        ("GET", "/v1/admin/audit"),
    ]:
        r = s.client.request(method, path)
        assert_error(r, 401, "unauthenticated")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert_error(s.client.post("/v1/query", json={"question": "x"}), 401, "unauthenticated")
    # Liveness stays open for orchestrators; it carries no tenant data.
    assert s.client.get("/healthz").status_code == 200

    for bad in [
        "nonsense",
        "pmk_0123456789abcdef_" + "A" * 43,  # well-formed, unknown id
        "Basic dXNlcjpwYXNz",
    ]:
        r = s.client.get("/v1/documents", headers={"Authorization": f"Bearer {bad}"})
        assert_error(r, 401, "unauthenticated")
    r = s.client.get("/v1/documents", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_error(r, 401, "unauthenticated")

    ingest = s.key("acme", ("ingest",))
    query = s.key("acme", ("query",))
    admin = s.key("acme", ("admin",))
    md = df.make_md(s.settings.storage.data_dir.parent / "k.md", "K", [("S", ["Kiwi facts."])])

    assert_error(upload(s, query, md), 403, "insufficient_scope")
    assert upload(s, ingest, md).status_code == 202
    assert_error(ask(s, ingest, "kiwi"), 403, "insufficient_scope")
    assert ask(s, query, "kiwi").status_code == 200
    # The OpenAI-compatible route is a query too.
    chat = {"model": "perimeter", "messages": [{"role": "user", "content": "kiwi?"}]}
    r = s.client.post("/v1/chat/completions", json=chat, headers=ingest)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "insufficient_scope"
    assert s.client.get("/v1/documents", headers=query).status_code == 200
    assert s.client.get("/v1/documents", headers=ingest).status_code == 200
    assert_error(s.client.get("/v1/documents", headers=admin), 403, "insufficient_scope")
    assert_error(s.client.get("/v1/admin/audit", headers=query), 403, "insufficient_scope")
    assert s.client.get("/v1/admin/audit", headers=admin).status_code == 200

    # X-API-Key works as well as Authorization: Bearer.
    plain = query["Authorization"].removeprefix("Bearer ")
    assert s.client.get("/v1/documents", headers={"X-API-Key": plain}).status_code == 200


def test_keys_are_stored_hashed_expire_and_revoke(secure_stack: SecureStack) -> None:
    s = secure_stack
    s.tenant("acme")
    record, plain = s.services.keys.create_key("acme", ["query"], [])
    key_id, secret = plain.split("_", 2)[1:]
    assert key_id == record.id

    with s.services.metadata.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM api_keys WHERE id = :i"), {"i": key_id}).one()
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([str(v) for v in row])

    headers = {"Authorization": f"Bearer {plain}"}
    assert s.client.get("/v1/documents", headers=headers).status_code == 200
    # Right id, wrong secret: refused the same way as an unknown key.
    forged = {"Authorization": f"Bearer pmk_{key_id}_{'x' * len(secret)}"}
    assert_error(s.client.get("/v1/documents", headers=forged), 401, "unauthenticated")

    assert s.services.keys.revoke_key(key_id)
    assert_error(s.client.get("/v1/documents", headers=headers), 401, "unauthenticated")
    assert not s.services.keys.revoke_key(key_id)

    _r, expired = s.services.keys.create_key("acme", ["query"], [], expires_in=timedelta(-1))
    r = s.client.get("/v1/documents", headers={"Authorization": f"Bearer {expired}"})
    assert_error(r, 401, "unauthenticated")

    # The plain secret is nowhere in the data folder (DB files, WAL, blobs).
    for path in s.settings.storage.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_admin_cli_manages_tenants_and_keys_in_the_api_database(
    secure_stack: SecureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perimeter.cli import app
    from perimeter.settings import get_settings

    s = secure_stack
    monkeypatch.setenv("PERIMETER_DATABASE__URL", s.settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()

        def cli(*args: str) -> Any:
            return runner.invoke(app, list(args), catch_exceptions=False)

        assert cli("admin", "tenant-create", "globex").exit_code == 0
        assert "already exists" in cli("admin", "tenant-create", "globex").output
        assert cli("admin", "tenant-create", "bad tenant/../x").exit_code == 1

        made = cli(
            "admin", "key-create", "--tenant", "globex", "--scopes", "ingest,query",
            "--groups", "hr,legal", "--json",
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        info = json.loads(made.output)
        key, key_id = info["key"], info["id"]
        assert info["scopes"] == ["ingest", "query"] and info["groups"] == ["hr", "legal"]
        assert cli("admin", "key-create", "--tenant", "nope", "--scopes", "query").exit_code == 1
        bad_scope = cli("admin", "key-create", "--tenant", "globex", "--scopes", "root")
        assert bad_scope.exit_code == 1

        headers = {"Authorization": f"Bearer {key}"}
        assert s.client.get("/v1/documents", headers=headers).status_code == 200

        listing = cli("admin", "key-list", "--tenant", "globex", "--json")
        assert listing.exit_code == 0
        assert key.split("_", 2)[2] not in listing.output  # the secret is never shown again
        (row,) = json.loads(listing.output)
        assert row["id"] == key_id and row["active"] is True

        assert cli("admin", "key-revoke", key_id).exit_code == 0
        assert cli("admin", "key-revoke", key_id).exit_code == 1
        assert cli("admin", "key-revoke", "0000000000000000").exit_code == 1
        assert_error(s.client.get("/v1/documents", headers=headers), 401, "unauthenticated")
        (row,) = json.loads(cli("admin", "key-list", "--json").output)
        assert row["active"] is False and row["revoked_at"]

        audit = cli("admin", "audit", "--tenant", "globex", "--json")
        actions = [e["action"] for e in json.loads(audit.output)]
        assert actions == ["key-revoke", "key-create", "tenant-create"]
        assert key.split("_", 2)[2] not in audit.output
        assert cli("admin", "tenant-list", "--json").exit_code == 0
    finally:
        get_settings.cache_clear()


# -- audit ------------------------------------------------------------------------------------


def test_audit_log_records_who_what_and_served_chunks_without_secrets(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    from perimeter.domain import point_id_for

    s = secure_stack
    user = s.key("acme", ("ingest", "query"), groups=None)
    admin = s.key("acme", ("admin",))
    other_admin = s.key("globex", ("admin",))
    md = df.make_md(tmp_path / "otters.md", "Otters", [("Diet", ["Sea otters eat urchins."])])
    doc = upload(s, user, md).json()["documents"][0]
    s.wait_indexed([doc["document_id"]])

    question = "What do sea otters eat?"
    answer = ask(s, user, question).json()
    assert answer["sources"] and answer["sources"][0]["document_id"] == doc["document_id"]
    assert s.client.delete(f"/v1/documents/{doc['document_id']}", headers=user).status_code == 204

    entries = s.client.get("/v1/admin/audit", headers=admin).json()["entries"]
    by_action = {e["action"]: e for e in entries}
    assert set(by_action) == {"upload", "query", "delete"}
    user_key_id = user["Authorization"].split("_")[1]
    for e in entries:
        assert e["tenant_id"] == "acme"
        assert e["actor"] == f"key:{user_key_id}"
        assert e["auth_method"] == "api_key"
    assert by_action["upload"]["document_ids"] == [doc["document_id"]]
    assert by_action["upload"]["details"]["files"][0]["filename"] == "otters.md"
    assert by_action["query"]["details"]["question"] == question
    # Exactly the chunks that were served.
    assert by_action["query"]["point_ids"] == [point_id_for(doc["document_id"], 0)]
    assert by_action["query"]["document_ids"] == [doc["document_id"]]
    assert by_action["delete"]["document_ids"] == [doc["document_id"]]

    only_queries = s.client.get(
        "/v1/admin/audit", params={"action": "query"}, headers=admin
    ).json()["entries"]
    assert [e["action"] for e in only_queries] == ["query"]
    first = entries[-1]["id"]
    after = s.client.get("/v1/admin/audit", params={"after_id": first}, headers=admin).json()
    assert [e["action"] for e in after["entries"]] == ["query", "delete"]  # oldest first
    future = s.client.get(
        "/v1/admin/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin
    ).json()
    assert future["entries"] == []
    past = s.client.get(
        "/v1/admin/audit", params={"until": "2000-01-01T00:00:00+02:00"}, headers=admin
    ).json()
    assert past["entries"] == []
    # Another tenant's admin sees none of it.
    assert s.client.get("/v1/admin/audit", headers=other_admin).json()["entries"] == []

    # No credential anywhere in the log.
    with s.services.metadata.engine.connect() as conn:
        dump = json.dumps(
            [list(map(str, r)) for r in conn.execute(sa.text("SELECT * FROM audit_log"))]
        )
    for headers in (user, admin, other_admin):
        secret = headers["Authorization"].split("_", 2)[2]
        assert secret not in dump

    # Append-only, enforced by the database itself.
    for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with (
            pytest.raises(sa.exc.DBAPIError, match="append-only"),
            s.services.metadata.engine.begin() as conn,
        ):
            conn.execute(sa.text(statement))


# -- OIDC -------------------------------------------------------------------------------------


def _jwk(private_key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64(numbers.n),
        "e": b64(numbers.e),
    }


class IdP:
    """A local identity provider: an RSA key pair, its JWKS, and a token minter."""

    def __init__(self, kid: str = "k1") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_jwk(self.key, self.kid)]}

    def token(
        self, kid: str | None = None, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
            "tenant": "acme",
            "scope": "openid ingest query",
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body, self.key, algorithm="RS256", headers={"kid": kid or self.kid, **(headers or {})}
        )


@pytest.fixture(scope="module")
def idp() -> IdP:
    return IdP()


@pytest.fixture
def oidc_stack(secure_stack: SecureStack, idp: IdP, tmp_path: Path) -> SecureStack:
    """The secure stack, reconfigured for OIDC with a JWKS file (the API keys stay accepted)."""
    from perimeter.auth.service import Authenticator
    from perimeter.settings import AuthSettings

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(idp.jwks()))
    auth = AuthSettings(
        mode="oidc", oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_file=jwks_file
    )
    secure_stack.services.auth = Authenticator.from_settings(auth, secure_stack.services.keys)
    return secure_stack


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_oidc_tokens_are_checked_for_signature_issuer_audience_and_expiry(
    oidc_stack: SecureStack, idp: IdP
) -> None:
    s = oidc_stack
    assert s.client.get("/v1/documents", headers=bearer(idp.token())).status_code == 200

    stranger = IdP()  # same kid, different key: a forged signature
    now = int(time.time())
    refused = {
        "expired": idp.token(exp=now - 3600, iat=now - 7200),
        "wrong audience": idp.token(aud="another-app"),
        "wrong issuer": idp.token(iss="https://evil.example/"),
        "no exp": idp.token(exp=None),
        "forged signature": stranger.token(),
        "unknown kid": idp.token(kid="k-unknown"),
        "not a jwt": "eyJhbGciOi.broken.token",
    }
    public_pem = idp.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60, "tenant": "acme"},
        None,
        algorithm="none",
    )
    refused["alg none"] = unsigned
    # HS256 "signed" with the public key: the classic algorithm-confusion forgery.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": idp.kid}).encode()).rstrip(
        b"="
    )
    payload = base64.urlsafe_b64encode(
        json.dumps(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60, "tenant": "acme"}
        ).encode()
    ).rstrip(b"=")
    import hmac

    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    ).rstrip(b"=")
    refused["alg confusion"] = (header + b"." + payload + b"." + signature).decode()
    for why, token in refused.items():
        r = s.client.get("/v1/documents", headers=bearer(token))
        assert r.status_code == 401, (why, r.text)
        assert r.json()["error"]["code"] == "unauthenticated", why

    no_tenant = s.client.get("/v1/documents", headers=bearer(idp.token(tenant=None)))
    assert_error(no_tenant, 403, "no_tenant")
    # Scopes come from the scope claim: a query-only token cannot upload.
    md = df.make_md(s.settings.storage.data_dir.parent / "o.md", "O", [("S", ["Oak trees."])])
    r = upload(s, bearer(idp.token(scope="openid query")), md)
    assert_error(r, 403, "insufficient_scope")
    # API keys keep working in oidc mode (service accounts).
    assert s.client.get("/v1/documents", headers=s.key("acme", ("query",))).status_code == 200


def test_oidc_groups_claim_drives_document_acl_and_tenant_claim_isolates(
    oidc_stack: SecureStack, idp: IdP, tmp_path: Path
) -> None:
    s = oidc_stack
    hr = bearer(idp.token(sub="hana", groups=["hr"]))
    staff = bearer(idp.token(sub="sam"))  # no groups claim: public documents only
    other_tenant = bearer(idp.token(sub="olga", tenant="globex", groups=["hr"]))
    pay = df.make_md(tmp_path / "pay.md", "Payroll", [("Bands", ["Band QZ7 pays ninety units."])])
    pub = df.make_md(tmp_path / "pub.md", "Canteen", [("Menu", ["Soup is served daily."])])
    r = upload(s, hr, pay, groups='["hr"]')
    assert r.status_code == 202, r.text
    pay_id = r.json()["documents"][0]["document_id"]
    pub_id = upload(s, staff, pub).json()["documents"][0]["document_id"]
    s.wait_indexed([pay_id, pub_id])

    def listed(headers: dict[str, str]) -> set[str]:
        return {d["id"] for d in s.client.get("/v1/documents", headers=headers).json()["documents"]}

    assert listed(hr) == {pay_id, pub_id}
    assert listed(staff) == {pub_id}
    assert listed(other_tenant) == set()
    assert_error(s.client.get(f"/v1/documents/{pay_id}", headers=staff), 404, "document_not_found")
    hits = ask(s, staff, "Which band pays ninety units?", top_k=20).json()["sources"]
    assert pay_id not in {h["document_id"] for h in hits}
    assert "QZ7" not in json.dumps(hits)
    hits = ask(s, hr, "Which band pays ninety units?").json()["sources"]
    assert hits[0]["document_id"] == pay_id

    audit_actor = s.services.audit.entries(tenant_id="acme", action="upload")[-1].actor
    assert audit_actor == "oidc:hana"


class _JwksHandler(BaseHTTPRequestHandler):
    body = b"{}"
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[_JwksHandler]]]:
    handler = type("Handler", (_JwksHandler,), {"body": b"{}", "hits": 0})
    server = HTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/certs", handler
    finally:
        server.shutdown()
        server.server_close()


def test_jwks_url_inside_the_perimeter_is_cached_and_refetched_on_key_rotation(
    jwks_server: tuple[str, type[_JwksHandler]],
) -> None:
    from perimeter.auth.oidc import InvalidToken, JwksSource, OidcVerifier

    url, handler = jwks_server
    old, new = IdP("2025"), IdP("2026")
    handler.body = json.dumps(old.jwks()).encode()
    verifier = OidcVerifier(
        JwksSource(url=url, cache_s=300, min_refetch_s=0),
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["RS256"],
    )
    assert verifier.verify(old.token()).subject == "alice"
    assert verifier.verify(old.token(sub="bob")).subject == "bob"
    assert handler.hits == 1  # cached

    # The IdP rotates: a token with the new kid makes the verifier refetch once.
    handler.body = json.dumps({"keys": old.jwks()["keys"] + new.jwks()["keys"]}).encode()
    assert verifier.verify(new.token()).subject == "alice"
    assert handler.hits == 2
    with pytest.raises(InvalidToken):
        verifier.verify(IdP("2026").token())  # right kid, wrong key


@pytest.mark.integration
def test_a_deployment_wide_reindex_needs_the_operator_scope(secure_stack: SecureStack) -> None:
    # A re-index rebuilds every tenant's documents: a tenant's own admin key must not start,
    # list or steer one; only a key the operator made with the `operator` scope may.
    s = secure_stack
    tenant_admin = s.key("acme", ("ingest", "query", "admin"))
    operator = s.key("ops", ("operator",))
    for method, path in (("GET", "/v1/admin/reindex"), ("POST", "/v1/admin/reindex")):
        r = s.client.request(method, path, headers=tenant_admin, json={})
        assert r.status_code == 403, (method, r.text)
    listed = s.client.get("/v1/admin/reindex", headers=operator)
    assert listed.status_code == 200, listed.text
