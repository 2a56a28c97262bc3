"""Which scope each endpoint needs: one table, so a reviewer reads the whole policy in one place.

A route that asks for the caller's identity but has no entry here is refused (403) whenever
authentication is on: a new endpoint is closed until someone decides who may call it.
"""

from __future__ import annotations

# (method, route template) -> scopes of which the caller needs at least one.
ROUTE_SCOPES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/documents"): frozenset({"ingest"}),
    ("GET", "/v1/documents"): frozenset({"ingest", "query"}),
    ("GET", "/v1/documents/{document_id}"): frozenset({"ingest", "query"}),
    ("DELETE", "/v1/documents/{document_id}"): frozenset({"ingest"}),
    ("POST", "/v1/documents/{document_id}/reindex"): frozenset({"ingest"}),
    ("GET", "/v1/jobs/{job_id}"): frozenset({"ingest", "query"}),
    ("POST", "/v1/query"): frozenset({"query"}),
    ("POST", "/v1/chat/completions"): frozenset({"query"}),
    # Conversations are their caller's own (tenant + actor); asking in one is a query.
    ("POST", "/v1/conversations"): frozenset({"query"}),
    ("GET", "/v1/conversations"): frozenset({"query"}),
    ("GET", "/v1/conversations/{conversation_id}"): frozenset({"query"}),
    ("DELETE", "/v1/conversations/{conversation_id}"): frozenset({"query"}),
    ("GET", "/v1/models"): frozenset({"query"}),
    ("GET", "/v1/models/{model}"): frozenset({"query"}),
    ("GET", "/v1/admin/audit"): frozenset({"admin"}),
    # Re-index (routes/reindex.py): deployment-wide, every tenant's documents of a profile.
    ("POST", "/v1/admin/reindex"): frozenset({"operator"}),
    ("GET", "/v1/admin/reindex"): frozenset({"operator"}),
    ("GET", "/v1/admin/reindex/{job_id}"): frozenset({"operator"}),
    ("POST", "/v1/admin/reindex/{job_id}/resume"): frozenset({"operator"}),
    ("POST", "/v1/admin/reindex/{job_id}/switch"): frozenset({"operator"}),
    ("POST", "/v1/admin/reindex/{job_id}/rollback"): frozenset({"operator"}),
    ("POST", "/v1/admin/reindex/{job_id}/finish"): frozenset({"operator"}),
    ("POST", "/v1/admin/reindex/{job_id}/abort"): frozenset({"operator"}),
    ("POST", "/v1/collections"): frozenset({"admin"}),
    ("GET", "/v1/collections"): frozenset({"ingest", "query"}),
    ("GET", "/v1/collections/{name}"): frozenset({"ingest", "query"}),
    ("DELETE", "/v1/collections/{name}"): frozenset({"admin"}),
}


def required_scopes(method: str, route_path: str | None) -> frozenset[str] | None:
    """The scopes an endpoint needs; None when the endpoint is not in the policy."""
    if route_path is None:
        return None
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return ROUTE_SCOPES.get((method, route_path))
