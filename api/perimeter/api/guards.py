"""What the document routes call to apply the ACL and write the audit log, so the routes stay
thin and every route applies the same rules.

A document the caller may not read is reported exactly like a document that does not exist
(404 ``document_not_found``): answering 403 would confirm that it exists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from perimeter.auth.principal import InvalidGroups, Principal, parse_groups
from perimeter.domain import DEFAULT_KB, DocumentRecord, JobRecord, document_id_for
from perimeter.errors import APIError

if TYPE_CHECKING:
    from perimeter.composition import Services

MAX_GROUPS_CHARS = 8192


def readable_document(
    services: Services, principal: Principal, document_id: str
) -> DocumentRecord | None:
    doc = services.metadata.get_document(principal.tenant_id, document_id)
    if doc is None or not principal.can_read(doc.groups):
        return None
    return doc


def readable_job(services: Services, principal: Principal, job_id: str) -> JobRecord | None:
    job = services.metadata.get_job(principal.tenant_id, job_id)
    if job is None or readable_document(services, principal, job.document_id) is None:
        return None
    return job


def upload_groups(raw: str | None, principal: Principal) -> list[str]:
    """The ``groups`` form field of an upload: a JSON list of group names ([] or absent: every
    member of the tenant may read the files). A caller may only restrict a document to groups
    it belongs to, so nobody can plant content in another group's answers."""
    if raw is None or not raw.strip():
        return []
    if len(raw) > MAX_GROUPS_CHARS:
        raise APIError(413, "groups_too_large", f"groups exceed {MAX_GROUPS_CHARS} characters")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise APIError(400, "malformed_groups", f"groups is not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise APIError(400, "malformed_groups", "groups is nested too deeply") from exc
    if not isinstance(value, list):
        raise APIError(400, "malformed_groups", 'groups must be a JSON list, e.g. ["hr"]')
    try:
        groups = parse_groups(value)
    except InvalidGroups as exc:
        raise APIError(400, "malformed_groups", str(exc)) from exc
    if principal.groups is not None:
        outside = sorted(set(groups) - set(principal.groups))
        if outside:
            raise APIError(
                403,
                "group_not_allowed",
                f"you may only restrict documents to your own groups; not a member of {outside}",
            )
    return groups


def check_not_hidden_duplicate(
    services: Services,
    principal: Principal,
    content_hash: str,
    filename: str,
    kb: str = DEFAULT_KB,
) -> None:
    """Same bytes in one tenant are one document. If that document exists but this caller may
    not read it, accepting the upload as a "duplicate" would hand out its id; refuse instead.
    (The caller, who holds the exact bytes, learns that someone in the tenant has them too:
    documented in docs/security.md.)"""
    existing = services.metadata.get_document(
        principal.tenant_id, document_id_for(principal.tenant_id, content_hash, kb)
    )
    if existing is not None and not principal.can_read(existing.groups):
        raise APIError(
            409,
            "duplicate_restricted",
            f"{filename}: identical content is already stored in this tenant with access "
            "restricted to other groups; ask its owner or an administrator",
            {"filename": filename},
        )


# Metadata keys become Qdrant payload paths ("metadata.<key>"); dots, brackets, quotes and
# spaces would be parsed as path syntax (or fail inside the store), so filters take plain keys.
_FILTER_KEY = re.compile(r"^[\w-]{1,128}$")
_INT64 = 2**63


def check_query_filters(metadata: dict[str, Any] | None, range_keys: Iterable[str] = ()) -> None:
    """Refuse filter keys and values the vector store cannot match exactly (a 422, where they
    used to surface as 500s from inside the store). The tenant and group conditions are added
    by the server beside these, so no filter can widen the search either way."""
    for key in [*(metadata or {}), *range_keys]:
        if not _FILTER_KEY.match(key):
            raise APIError(
                422,
                "invalid_filter",
                f"filter key {key!r}: use letters, digits, '_' or '-' (1-128 characters)",
            )
    for key, value in (metadata or {}).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) or (isinstance(v, int) and not -_INT64 <= v < _INT64):
                raise APIError(
                    422,
                    "invalid_filter",
                    f"filter {key!r}: exact match takes a string, a 64-bit integer or a boolean",
                )
