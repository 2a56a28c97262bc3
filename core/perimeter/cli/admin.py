"""`perimeter admin ...`: tenants, API keys and the audit log, straight on the metadata DB."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from perimeter.cli.common import JsonOpt, _fail, app, console, err

# operator's tools on the host, and must work before any key exists.
admin_app = typer.Typer(
    help="Tenants, API keys and the audit log (direct access to the metadata DB).",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")


def _admin_stores() -> tuple[Any, Any, Any]:
    from perimeter.audit import AuditLog
    from perimeter.auth.api_keys import ApiKeyStore
    from perimeter.backends.sql_metadata import SqlMetadataStore
    from perimeter.settings import get_settings

    metadata = SqlMetadataStore(get_settings().database_url)
    metadata.create_schema()  # the tables above are registered by the imports
    return metadata, ApiKeyStore(metadata), AuditLog(metadata)


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry for the uid in some containers
        return "cli"


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@admin_app.command("tenant-create")
def admin_tenant_create(name: Annotated[str, typer.Argument(help="Tenant id.")]) -> None:
    """Create a tenant (a fully isolated set of documents, keys and audit entries)."""
    metadata, keys, audit = _admin_stores()
    try:
        created = keys.create_tenant(name)
        if created:
            audit.record(
                tenant_id=name, actor=_cli_actor(), auth_method="cli", action="tenant-create"
            )
    except ValueError as exc:
        _fail(str(exc))
    finally:
        metadata.close()
    console.print(f"tenant {name} {'created' if created else 'already exists'}")


@admin_app.command("tenant-list")
def admin_tenant_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    metadata, keys, _audit = _admin_stores()
    try:
        rows = keys.list_tenants()
    finally:
        metadata.close()
    if as_json:
        print(json.dumps([{"id": t, "created_at": c.isoformat()} for t, c in rows]))
        return
    table = Table("tenant", "created")
    for t, c in rows:
        table.add_row(t, c.isoformat(timespec="seconds"))
    console.print(table)


@admin_app.command("key-create")
def admin_key_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest, query, admin.")],
    groups: Annotated[
        str | None,
        typer.Option(help="Comma-separated groups whose restricted documents the key may read."),
    ] = None,
    all_groups: Annotated[
        bool,
        typer.Option(
            "--all-groups", help="The key reads every document of the tenant, whatever its groups."
        ),
    ] = False,
    name: Annotated[str, typer.Option(help="A label for listings.")] = "",
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again.

    Without --groups or --all-groups the key reads only documents uploaded without groups."""
    from perimeter.auth.api_keys import UnknownTenant

    if groups and all_groups:
        _fail("give --groups or --all-groups, not both")
    metadata, keys, audit = _admin_stores()
    try:
        record, plain = keys.create_key(
            tenant,
            _csv(scopes),
            None if all_groups else _csv(groups),
            name=name,
            expires_in=timedelta(days=expires_days) if expires_days else None,
        )
        audit.record(
            tenant_id=tenant,
            actor=_cli_actor(),
            auth_method="cli",
            action="key-create",
            details={
                "key_id": record.id,
                "scopes": sorted(record.scopes),
                "groups": record.groups,
                "name": record.name,
            },
        )
    except (UnknownTenant, ValueError) as exc:
        _fail(str(exc))
    finally:
        metadata.close()
    info = {
        "id": record.id,
        "tenant": record.tenant_id,
        "scopes": sorted(record.scopes),
        "groups": record.groups,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
    }
    if as_json:
        print(json.dumps({**info, "key": plain}))
        return
    err.print(
        f"key {record.id} for tenant {record.tenant_id}, scopes {','.join(info['scopes'])}, "
        f"groups {'ALL' if record.groups is None else (','.join(record.groups) or 'none')}"
    )
    err.print("[yellow]Store it now: it is shown once and cannot be recovered.[/yellow]")
    typer.echo(plain)


@admin_app.command("key-list")
def admin_key_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List API keys (ids and scopes; secrets are never stored, so never shown)."""
    metadata, keys, _audit = _admin_stores()
    try:
        records = keys.list_keys(tenant)
    finally:
        metadata.close()
    rows = [
        {
            "id": r.id,
            "tenant": r.tenant_id,
            "name": r.name,
            "scopes": sorted(r.scopes),
            "groups": r.groups,
            "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            "active": r.active(),
        }
        for r in records
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=16)  # what key-revoke takes: never cut
    for heading in ("tenant", "name", "scopes", "groups", "created", "state"):
        table.add_column(heading)
    for r in rows:
        groups_text = "ALL" if r["groups"] is None else ",".join(r["groups"]) or "-"
        state = "active" if r["active"] else ("revoked" if r["revoked_at"] else "expired")
        table.add_row(
            r["id"], r["tenant"], r["name"], ",".join(r["scopes"]), groups_text,
            r["created_at"][:19], state,
        )  # fmt: skip
    console.print(table)


@admin_app.command("key-revoke")
def admin_key_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (from key-list).")],
) -> None:
    """Revoke an API key; requests with it fail from the next one on."""
    metadata, keys, audit = _admin_stores()
    try:
        record = keys.get_key(key_id)
        if record is None:
            _fail(f"no key {key_id!r}")
        if not keys.revoke_key(key_id):
            _fail(f"key {key_id} is already revoked")
        audit.record(
            tenant_id=record.tenant_id,
            actor=_cli_actor(),
            auth_method="cli",
            action="key-revoke",
            details={"key_id": key_id},
        )
    finally:
        metadata.close()
    console.print(f"revoked {key_id}")


@admin_app.command("audit")
def admin_audit(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    action: Annotated[str | None, typer.Option(help="upload, delete, reindex, query, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest N entries.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit log, newest first."""
    metadata, _keys, audit = _admin_stores()
    try:
        entries = audit.entries(tenant_id=tenant, action=action, limit=limit)
    finally:
        metadata.close()
    if as_json:
        print(json.dumps([e.as_dict() for e in entries]))
        return
    table = Table("id", "at", "tenant", "actor", "action", "documents", "chunks", "details")
    for e in entries:
        table.add_row(
            str(e.id), e.at.isoformat(timespec="seconds"), e.tenant_id, e.actor, e.action,
            str(len(e.document_ids)), str(len(e.point_ids)),
            json.dumps(e.details, ensure_ascii=False)[:80],
        )  # fmt: skip
    console.print(table)


@admin_app.command("purge-conversations")
def admin_purge_conversations(
    days: Annotated[
        int | None,
        typer.Option(
            help="Delete conversations untouched this many days (default: the "
            "conversation.retention_days setting)."
        ),
    ] = None,
) -> None:
    """Delete stored conversations past their retention (the API also does it as it goes)."""
    from perimeter.backends.sql_conversations import SqlConversationStore
    from perimeter.settings import get_settings

    retention = get_settings().conversation.retention_days if days is None else days
    if retention < 0:
        _fail("--days must be 0 (keep everything) or more")
    metadata, _keys, audit = _admin_stores()
    try:
        deleted = SqlConversationStore(metadata).purge_expired(retention)
        if deleted:
            audit.record(
                tenant_id="*",
                actor=_cli_actor(),
                auth_method="cli",
                action="conversation.purge",
                details={"deleted": deleted, "retention_days": retention},
            )
    finally:
        metadata.close()
    plural = "" if deleted == 1 else "s"
    console.print(f"deleted {deleted} conversation{plural} untouched for {retention}+ days")


@admin_app.command("migrate-store")
def admin_migrate_store() -> None:
    """Copy the embedded local-mode folder (<data_dir>/qdrant, the vector store before Qdrant
    Edge) into Qdrant Edge, verify it, and keep the old folder as qdrant.migrated-<time>.
    Start-up does the same; run this to migrate ahead of it (the stack must be stopped)."""
    from perimeter.cli.common import _logging
    from perimeter.composition import build_chunk_store, migrate_embedded_store
    from perimeter.settings import get_settings

    settings = get_settings()
    if settings.qdrant.url is not None or settings.qdrant.embedded != "edge":
        _fail("only the embedded Qdrant Edge store (no PERIMETER_QDRANT__URL) migrates")
    legacy = settings.storage.data_dir / "qdrant"
    if not legacy.is_dir():
        console.print(f"nothing to migrate: no local-mode folder at {legacy}")
        return
    _logging()
    store = build_chunk_store(settings)
    try:
        migrate_embedded_store(settings, store)
    except Exception as exc:  # the old folder is left in place; say why, no traceback
        _fail(f"migration stopped, {legacy} is unchanged: {exc}")
    finally:
        store.close()
    kept = sorted(legacy.parent.glob(f"{legacy.name}.migrated-*"))
    console.print(
        f"migrated into {settings.storage.data_dir / 'qdrant_edge'}; old folder: {kept[-1]}"
    )
