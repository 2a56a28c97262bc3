"""API keys and tenants, in the metadata DB (the tables share ``sql_metadata.metadata_obj``, so
``create_schema`` creates them with the rest).

A key reads ``pmk_<key id>_<secret>``: the key id (16 hex characters, public, shown in listings
and the audit log) finds the row; the secret (32 random bytes, base64url) is never stored, only
its SHA-256, compared in constant time. A 256-bit random secret needs no slow password hash:
nobody can brute-force it, so a fast digest is the right tool. The plain key is returned once,
by :meth:`ApiKeyStore.create_key`, and cannot be recovered afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from perimeter.auth.principal import parse_groups, parse_scopes, valid_tenant
from perimeter.backends.sql_metadata import SqlMetadataStore, metadata_obj

KEY_PREFIX = "pmk"
KEY_ID_HEX = 16
SECRET_BYTES = 32

tenants = sa.Table(
    "tenants",
    metadata_obj,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata_obj,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False, index=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("groups", sa.JSON, nullable=True),  # NULL: every document of the tenant
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


class UnknownTenant(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    tenant_id: str
    name: str
    scopes: frozenset[str]
    groups: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def active(self, now: datetime | None = None) -> bool:
        now = now or _now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: str


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented key; None when it does not even have the shape of one."""
    prefix, sep, rest = token.partition("_")
    if prefix != KEY_PREFIX or not sep:
        return None
    key_id, sep, secret = rest.partition("_")
    if (
        not sep
        or len(key_id) != KEY_ID_HEX
        or any(c not in "0123456789abcdef" for c in key_id)
        or not 16 <= len(secret) <= 128
    ):
        return None
    return ParsedKey(key_id, secret)


def looks_like_api_key(token: str) -> bool:
    return token.startswith(f"{KEY_PREFIX}_")


def new_key_material() -> tuple[str, str, str]:
    """(key id, secret, the key as shown to the operator)."""
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return key_id, secret, f"{KEY_PREFIX}_{key_id}_{secret}"


# Compared against when the key id is unknown, so a miss costs what a hit costs.
_DUMMY_DIGEST = digest(uuid.uuid4().hex)


class ApiKeyStore:
    def __init__(self, metadata: SqlMetadataStore) -> None:
        self._metadata = metadata

    @property
    def engine(self) -> sa.engine.Engine:
        return self._metadata.engine

    # -- tenants ---------------------------------------------------------------------------
    def create_tenant(self, tenant_id: str) -> bool:
        """True when created, False when it already existed."""
        if not valid_tenant(tenant_id):
            raise ValueError(
                f"invalid tenant id {tenant_id!r}: 1-128 of A-Z a-z 0-9 . _ -, starting with a "
                "letter or digit"
            )
        try:
            with self.engine.begin() as conn:
                conn.execute(tenants.insert().values(id=tenant_id, created_at=_now()))
        except sa.exc.IntegrityError:
            return False
        return True

    def tenant_exists(self, tenant_id: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first()
                is not None
            )

    def list_tenants(self) -> list[tuple[str, datetime]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.id)).all()
        return [(r.id, _aware(r.created_at) or _now()) for r in rows]

    # -- keys ------------------------------------------------------------------------------
    def create_key(
        self,
        tenant_id: str,
        scopes: Sequence[str],
        groups: Sequence[str] | None = None,
        name: str = "",
        expires_in: timedelta | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Store a new key; returns its record and the plain key, which exists only here."""
        if not self.tenant_exists(tenant_id):
            raise UnknownTenant(
                f"no tenant {tenant_id!r}; create it first: perimeter admin tenant-create"
            )
        scope_set = parse_scopes(scopes)
        group_list = parse_groups(groups) if groups is not None else None
        key_id, secret, plain = new_key_material()
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name=name[:128],
                    secret_sha256=digest(secret),
                    scopes=sorted(scope_set),
                    groups=group_list,
                    created_at=now,
                    expires_at=now + expires_in if expires_in is not None else None,
                    revoked_at=None,
                )
            )
        record = self.get_key(key_id)
        assert record is not None
        return record, plain

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            )
        return _record(row) if row else None

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.tenant_id, api_keys.c.created_at)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def revoke_key(self, key_id: str) -> bool:
        """True when the key existed and was active; revocation takes effect on the next
        request (keys are looked up per request, never cached)."""
        with self.engine.begin() as conn:
            updated = conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            ).rowcount
        return bool(updated)

    def verify(self, token: str) -> ApiKeyRecord | None:
        """The active key record for a presented key, or None (unknown, wrong secret, revoked,
        expired: the caller answers all of them with the same 401)."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(api_keys).where(api_keys.c.id == parsed.key_id))
                .mappings()
                .first()
            )
        stored = row["secret_sha256"] if row else _DUMMY_DIGEST
        matches = hmac.compare_digest(stored, digest(parsed.secret))
        if row is None or not matches:
            return None
        record = _record(row)
        return record if record.active() else None


def _record(row: Any) -> ApiKeyRecord:
    groups = row["groups"]
    return ApiKeyRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        scopes=frozenset(row["scopes"] or []),
        groups=list(groups) if groups is not None else None,
        created_at=_aware(row["created_at"]) or _now(),
        expires_at=_aware(row["expires_at"]),
        revoked_at=_aware(row["revoked_at"]),
    )
