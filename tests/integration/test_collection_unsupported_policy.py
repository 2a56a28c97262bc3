"""A collection's own unsupported-content policy: stored, validated, and upgraded into old DBs."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.domain import KnowledgeBase
from perimeter.knowledge_bases import ChunkingDefaults, InvalidKnowledgeBase, KnowledgeBaseService

pytestmark = pytest.mark.integration


def service(tmp_path: Path) -> tuple[KnowledgeBaseService, SqlMetadataStore]:
    metadata = SqlMetadataStore(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    metadata.create_schema()
    return KnowledgeBaseService(metadata, ["default"], ChunkingDefaults(256, 32), 10), metadata


def test_policy_is_stored_and_validated(tmp_path: Path) -> None:
    kbs, metadata = service(tmp_path)
    try:
        kbs.create(KnowledgeBase(tenant_id="t", name="clinic", unsupported_policy="refuse"))
        kbs.create(KnowledgeBase(tenant_id="t", name="wiki"))
        assert kbs.require("t", "clinic").unsupported_policy == "refuse"
        assert kbs.require("t", "wiki").unsupported_policy is None  # the deployment's
        with pytest.raises(InvalidKnowledgeBase, match="unsupported_policy"):
            kbs.create(KnowledgeBase(tenant_id="t", name="bad", unsupported_policy="hide"))
    finally:
        metadata.close()


def test_an_older_database_gains_the_column(tmp_path: Path) -> None:
    kbs, metadata = service(tmp_path)
    metadata.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    with engine.begin() as conn:  # as a database made before the column existed
        conn.execute(sa.text("ALTER TABLE knowledge_bases DROP COLUMN unsupported_policy"))
    engine.dispose()
    kbs, metadata = service(tmp_path)
    try:
        kbs.create(KnowledgeBase(tenant_id="t", name="hr", unsupported_policy="annotate"))
        assert kbs.require("t", "hr").unsupported_policy == "annotate"
    finally:
        metadata.close()
