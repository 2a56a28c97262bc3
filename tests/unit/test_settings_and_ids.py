"""Settings from the environment and the deterministic ids idempotency relies on."""

from __future__ import annotations

import pytest

from perimeter.domain import document_id_for, point_id_for
from perimeter.settings import Settings, get_settings

pytestmark = pytest.mark.unit


def test_nested_env_vars_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERIMETER_QDRANT__URL", "http://qdrant:6333")
    monkeypatch.setenv("PERIMETER_QDRANT__API_KEY", "s3cret")
    monkeypatch.setenv("PERIMETER_CHUNKING__MAX_TOKENS", "321")
    monkeypatch.setenv("PERIMETER_BROKER__URL", "redis://redis:6379/0")
    s = Settings()
    assert s.qdrant.url == "http://qdrant:6333"
    assert s.chunking.max_tokens == 321
    assert s.broker_url == "redis://redis:6379/0"
    assert not s.is_embedded
    assert s.qdrant.api_key is not None and s.qdrant.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in s.model_dump_json()


def test_embedded_defaults_live_in_the_data_folder(tmp_path: object) -> None:
    s = Settings(storage={"data_dir": "/srv/p"})
    assert s.is_embedded
    assert s.database_url == "sqlite:////srv/p/metadata.sqlite"
    assert s.broker_url == "sqla+sqlite:////srv/p/broker.sqlite"


def test_settings_are_built_once() -> None:
    get_settings.cache_clear()
    assert get_settings() is get_settings()
    get_settings.cache_clear()


def test_ids_are_deterministic_and_tenant_scoped() -> None:
    h = "a" * 64
    assert document_id_for("t1", h) == document_id_for("t1", h)
    assert document_id_for("t1", h) != document_id_for("t2", h)
    doc = document_id_for("t1", h)
    assert point_id_for(doc, 0) == point_id_for(doc, 0)
    assert len({point_id_for(doc, i) for i in range(100)}) == 100
