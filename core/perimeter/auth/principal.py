"""The caller's identity and the pure rules about it: scopes, group names, who may read what.

Everything here is pure logic (no I/O), so the API, the CLI and the tests share one definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

# "operator": deployment-wide operations that touch every tenant (the zero-downtime re-index).
# A tenant's "admin" is tenant-wide only, so it cannot start them; only the operator, who creates
# keys on the host (`perimeter admin key-create --scopes operator`), hands this scope out.
Scope = Literal["ingest", "query", "admin", "operator"]
SCOPES: frozenset[str] = frozenset({"ingest", "query", "admin", "operator"})

# Stored on Qdrant points of unrestricted documents (backends/qdrant_payload.PUBLIC_GROUP); a
# caller may not name it, or it could mark a restricted upload "public" by accident or on purpose.
RESERVED_GROUPS: frozenset[str] = frozenset({"__public__"})
MAX_GROUPS = 64
MAX_GROUP_CHARS = 128
# Tenant ids end up in Qdrant payloads, SQL rows and log lines: a conservative alphabet.
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class InvalidGroups(ValueError):
    """A group list that is malformed or names a reserved group."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling.

    ``groups`` is ``None`` for a caller that sees every document of its tenant (auth disabled,
    or an admin), and a list otherwise: such a caller sees public documents plus documents
    restricted to one of its groups. ``actor`` names the caller in the audit log (an API key id
    or an OIDC subject, never a secret).
    """

    tenant_id: str
    groups: list[str] | None = None
    scopes: frozenset[str] = field(default_factory=lambda: SCOPES)
    actor: str = "anonymous"
    auth_method: str = "disabled"

    def has_any_scope(self, wanted: Iterable[str]) -> bool:
        return bool(self.scopes & frozenset(wanted))

    def can_read(self, document_groups: Sequence[str]) -> bool:
        return can_read(self.groups, document_groups)


def can_read(caller_groups: Sequence[str] | None, document_groups: Sequence[str]) -> bool:
    """The per-document ACL: no groups on the document means every member of the tenant."""
    if caller_groups is None or not document_groups:
        return True
    return not set(document_groups).isdisjoint(caller_groups)


def valid_group(name: str) -> bool:
    """Group names are free text from an identity provider ("/hr/eu", "Domain Users"), but
    never contain quotes, backslashes or control characters: the SQL listing matches them as
    quoted JSON strings, which those characters would make ambiguous. Nor lone UTF-16
    surrogates: not Unicode, they could not be serialised back out (a stored one broke the
    audit listing)."""
    return (
        0 < len(name) <= MAX_GROUP_CHARS
        and name == name.strip()
        and name not in RESERVED_GROUPS
        and not any(
            ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF
            for ch in name
        )
    )


def parse_groups(values: Iterable[object]) -> list[str]:
    """Validate a list of group names; sorted and de-duplicated. Raises InvalidGroups."""
    out: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not valid_group(value):
            raise InvalidGroups(
                f"invalid group name {value!r}: 1-{MAX_GROUP_CHARS} characters, no quotes, "
                "backslashes, control characters or surrounding spaces"
            )
        out.add(value)
    if len(out) > MAX_GROUPS:
        raise InvalidGroups(f"at most {MAX_GROUPS} groups")
    return sorted(out)


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    scopes = frozenset(v.strip() for v in values if v.strip())
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope of {sorted(SCOPES)}")
    return scopes


def valid_tenant(tenant_id: str) -> bool:
    return bool(_TENANT_RE.match(tenant_id))
