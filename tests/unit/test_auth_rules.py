"""Pure rules of auth and posture: key format, ACL, scopes, the route policy, JWT checks against
an in-memory JWKS, header parsing, endpoint classification, the egress guard's notion of local.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from perimeter.auth.api_keys import digest, looks_like_api_key, new_key_material, parse_key
from perimeter.auth.oidc import InvalidToken, JwksSource, OidcVerifier
from perimeter.auth.policy import ROUTE_SCOPES, required_scopes
from perimeter.auth.principal import (
    InvalidGroups,
    Principal,
    can_read,
    parse_groups,
    parse_scopes,
    valid_group,
    valid_tenant,
)
from perimeter.auth.service import _claim_groups, _claim_scopes, bearer_token
from perimeter.doctor import _mask_url, _telemetry_checks, classify_host, classify_ip
from perimeter.egress_guard import is_local_host

pytestmark = pytest.mark.unit


def test_key_material_round_trips_and_only_the_digest_is_kept() -> None:
    key_id, secret, plain = new_key_material()
    parsed = parse_key(plain)
    assert parsed is not None and (parsed.key_id, parsed.secret) == (key_id, secret)
    assert looks_like_api_key(plain)
    assert len(digest(secret)) == 64 and secret not in digest(secret)
    assert new_key_material()[2] != plain
    # A fixed upper-case id: a random hex id can be all digits, which upper() leaves valid.
    for bad in ["", "pmk_", "pmk_xyz_secret", f"pmk_{key_id}", f"sk_{key_id}_{secret}",
                f"pmk_ABCDEF0123456789_{secret}", f"pmk_{key_id}_short"]:  # fmt: skip
        assert parse_key(bad) is None, bad


@given(st.text(max_size=200))
def test_parse_key_never_raises(text: str) -> None:
    parse_key(text)


def test_document_acl() -> None:
    assert can_read(None, ["hr"])  # unrestricted caller
    assert can_read([], [])  # public document
    assert can_read(["eng"], [])
    assert not can_read([], ["hr"])
    assert not can_read(["eng"], ["hr"])
    assert can_read(["eng", "hr"], ["hr", "legal"])
    assert Principal("t", groups=["hr"]).can_read(["hr"])


def test_group_and_scope_and_tenant_validation() -> None:
    assert parse_groups(["b", "a", "a"]) == ["a", "b"]
    assert valid_group("/hr/eu") and valid_group("Domain Users") and valid_group("Équipe")
    for bad in ['a"b', "a\\b", "", " x", "x\n", "__public__", "x" * 129]:
        assert not valid_group(bad), bad
        with pytest.raises(InvalidGroups):
            parse_groups([bad])
    with pytest.raises(InvalidGroups):
        parse_groups([1])
    with pytest.raises(InvalidGroups):
        parse_groups([f"g{i}" for i in range(65)])
    assert parse_scopes(["ingest", " query "]) == {"ingest", "query"}
    with pytest.raises(ValueError):
        parse_scopes(["root"])
    with pytest.raises(ValueError):
        parse_scopes([])
    assert valid_tenant("acme-eu.1") and not valid_tenant("../x") and not valid_tenant("")


def test_every_route_that_asks_who_is_calling_has_a_scope_policy() -> None:
    """A new endpoint using PrincipalDep without a policy entry would be refused (fail closed);
    this test names it at once instead."""
    from fastapi.routing import APIRoute

    from perimeter.api.app import create_app
    from perimeter.api.deps import get_principal
    from perimeter.settings import Settings

    def depends_on_principal(dependant: Any) -> bool:
        return any(
            d.call is get_principal or depends_on_principal(d) for d in dependant.dependencies
        )

    def walk(routes: list[Any]) -> Any:
        # FastAPI >= 0.16x keeps included routers as nodes; older versions flatten them.
        for r in routes:
            if isinstance(r, APIRoute):
                yield r.path, r
            elif hasattr(r, "effective_route_contexts"):
                for ctx in r.effective_route_contexts():
                    if isinstance(ctx.original_route, APIRoute):
                        yield ctx.path, ctx.original_route

    guarded = set()
    for path, route in walk(create_app(Settings()).routes):
        if depends_on_principal(route.dependant):
            for method in route.methods:
                guarded.add((method, path))
    assert guarded, "no route depends on get_principal?"
    missing = {g for g in guarded if required_scopes(*g) is None}
    assert not missing, f"routes without a scope policy: {missing}"
    assert required_scopes("POST", "/v1/query") == {"query"}
    assert required_scopes("GET", None) is None
    assert ("GET", "/v1/admin/audit") in ROUTE_SCOPES


def test_bearer_token_parsing() -> None:
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"authorization": "bearer   abc  "}) == "abc"
    assert bearer_token({"authorization": "Basic abc"}) is None
    assert bearer_token({"authorization": "Bearer "}) is None
    assert bearer_token({"x-api-key": " k "}) == "k"
    # Authorization wins when both are sent.
    assert bearer_token({"authorization": "Bearer a", "x-api-key": "b"}) == "a"
    assert bearer_token({}) is None


def test_claims_to_groups_and_scopes() -> None:
    assert _claim_groups(None) == []  # no claim: public documents only, never "all"
    assert _claim_groups("hr") == ["hr"]
    assert _claim_groups(["hr", 'bad"name', 3, "eng"]) == ["eng", "hr"]
    assert _claim_scopes("openid ingest query profile", ["query"]) == {"ingest", "query"}
    assert _claim_scopes(["admin", "x"], []) == {"admin"}
    assert _claim_scopes(None, ["query"]) == {"query"}
    assert _claim_scopes(42, ["query"]) == frozenset()


@pytest.fixture(scope="module")
def signer() -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "k", "use": "sig", "alg": "RS256"})
    return key, {"keys": [jwk]}


def _token(key: Any, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "iss", "aud": "aud", "sub": "u", "exp": now + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, "RS256",
                      headers={"kid": "k"})  # fmt: skip


def test_oidc_verifier_with_an_in_memory_jwks(signer: tuple[Any, dict[str, Any]]) -> None:
    key, jwks = signer
    verifier = OidcVerifier(JwksSource(jwks=jwks), "iss", "aud", ["RS256"], leeway_s=0)
    assert verifier.verify(_token(key)).subject == "u"
    assert verifier.verify(_token(key, aud=["other", "aud"])).claims["sub"] == "u"
    for claims in ({"aud": "x"}, {"iss": "x"}, {"exp": int(time.time()) - 10}, {"sub": None},
                   {"exp": None}, {"nbf": int(time.time()) + 600}):  # fmt: skip
        with pytest.raises(InvalidToken):
            verifier.verify(_token(key, **claims))
    with pytest.raises(ValueError):
        OidcVerifier(JwksSource(jwks=jwks), "iss", "aud", ["HS256"])
    with pytest.raises(ValueError):
        OidcVerifier(JwksSource(jwks=jwks), "iss", "aud", ["none"])
    with pytest.raises(ValueError):
        JwksSource()


def test_endpoint_classification() -> None:
    assert classify_ip("127.0.0.1")[0] == "ok"
    assert classify_ip("::1")[0] == "ok"
    assert classify_ip("10.2.3.4") == ("ok", "private range")
    assert classify_ip("172.31.0.1")[0] == "ok" and classify_ip("172.32.0.1")[0] == "fail"
    assert classify_ip("fd12::1")[0] == "ok"
    assert classify_ip("::ffff:192.168.1.1") == ("ok", "private range")
    assert classify_ip("169.254.169.254")[0] == "fail"
    assert classify_ip("8.8.8.8")[0] == "fail"
    import ipaddress

    allowed = [ipaddress.ip_network("8.8.8.0/24")]
    assert classify_ip("8.8.8.8", allowed) == ("ok", "allow-listed")

    assert classify_host(None)[0] == "ok"
    assert classify_host("localhost")[0] == "ok"
    assert classify_host("[fd00::1]")[0] == "ok"
    assert classify_host("vllm", resolver=None)[0] == "warn"
    assert classify_host("vllm", resolver=lambda h: ["172.18.0.4"])[:2] == ("ok", "private range")
    status, why, addresses = classify_host(
        "api.example.com", resolver=lambda h: ["10.0.0.1", "93.184.216.34"]
    )
    assert status == "fail" and "93.184.216.34" in why and len(addresses) == 2

    def unresolvable(host: str) -> list[str]:
        raise OSError("no such host")

    assert classify_host("qdrant", resolver=unresolvable)[0] == "warn"


def test_url_masking_and_telemetry_switches() -> None:
    assert _mask_url("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert _mask_url("redis://user:pw@h/0") == "redis://user:***@h/0"
    assert _mask_url("http://qdrant:6333") == "http://qdrant:6333"
    checks = {c.name: c for c in _telemetry_checks({"HF_HUB_OFFLINE": "0", "DO_NOT_TRACK": "1"})}
    assert checks["HF_HUB_OFFLINE"].status == "fail"
    assert checks["DO_NOT_TRACK"].status == "ok"
    assert checks["TRANSFORMERS_OFFLINE"].status == "ok"  # unset: Perimeter sets it


def test_egress_guard_notion_of_local() -> None:
    for host in ["127.0.0.1", "127.8.9.1", "::1", "localhost", "LOCALHOST.", "a.localhost",
                 None, "", b"localhost", "::ffff:127.0.0.1"]:  # fmt: skip
        assert is_local_host(host), host
    for host in ["10.0.0.1", "example.com", "8.8.8.8", "::ffff:8.8.8.8", "localhost.evil.com",
                 "0.0.0.0", 12345]:  # fmt: skip
        assert not is_local_host(host), host
