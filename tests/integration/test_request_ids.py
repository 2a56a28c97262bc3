"""Every 500 names the request id the response's X-Request-ID carries, on every route family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perimeter.api.app import create_app
from perimeter.settings import Settings


class _Boom:
    """Stands in for the knowledge-base registry: the test is about the 500 path, not KBs."""

    def __getattr__(self, name: str) -> Any:
        def fail(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("simulated bug")

        return fail


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "error_of"),
    [
        ("/v1/models", lambda body: body["error"]),  # OpenAI-shaped errors
        ("/v1/collections", lambda body: body["error"]),  # Perimeter's own shape
    ],
)
def test_a_500_quotes_the_request_id_of_the_response(
    tmp_path: Path, path: str, error_of: Any
) -> None:
    settings = Settings(storage={"data_dir": str(tmp_path)})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.services.kbs = _Boom()  # type: ignore[attr-defined]
        sent = client.get(path, headers={"X-Request-ID": "trace-abc123"})
        assert sent.status_code == 500, sent.text
        assert sent.headers["X-Request-ID"] == "trace-abc123"
        assert "trace-abc123" in error_of(sent.json())["message"]
        assert "Traceback" not in sent.text
        made = client.get(path)
        assert made.status_code == 500
        assert made.headers["X-Request-ID"] in error_of(made.json())["message"]
