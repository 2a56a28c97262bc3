"""A small typed Python client for the Perimeter HTTP API. The CLI uses it too."""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from perimeter.polling import wait_until_final


class PerimeterError(RuntimeError):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class PerimeterClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout_s: float = 120.0,
        api_key: str | None = None,
    ) -> None:
        # Auth on (PERIMETER_AUTH__MODE=api_key): the key comes from the caller or the
        # environment, so the CLI works unchanged once an operator hands out keys.
        api_key = api_key or os.environ.get("PERIMETER_API_KEY") or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers)
        self.base_url = base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PerimeterClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                err = response.json().get("error", {})
            except ValueError:
                err = {}
            raise PerimeterError(
                response.status_code,
                err.get("code", "http_error"),
                err.get("message", response.text[:200]),
                err.get("details"),
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._check(self._http.request(method, path, **kwargs))
        except httpx.ConnectError as exc:
            raise PerimeterError(
                0,
                "unreachable",
                f"Perimeter is not reachable at {self.base_url}; is `perimeter up` running?",
            ) from exc

    # -- documents -------------------------------------------------------------------------
    def upload(
        self,
        paths: Sequence[Path],
        metadata: dict[str, Any] | None = None,
        collection: str | None = None,
    ) -> list[dict[str, Any]]:
        handles = [p.open("rb") for p in paths]
        try:
            files = [
                (
                    "files",
                    (p.name, h, mimetypes.guess_type(p.name)[0] or "application/octet-stream"),
                )
                for p, h in zip(paths, handles, strict=True)
            ]
            data: dict[str, str] = {}
            if metadata:
                data["metadata"] = json.dumps(metadata)
            if collection:
                data["collection"] = collection
            body = self._request("POST", "/v1/documents", files=files, data=data or None)
        finally:
            for h in handles:
                h.close()
        return list(body["documents"])

    def documents(
        self,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        collection: str | None = None,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if collection:
            params["collection"] = collection
        return list(self._request("GET", "/v1/documents", params=params)["documents"])

    def document(self, document_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/documents/{document_id}"))

    def delete(self, document_id: str) -> None:
        self._request("DELETE", f"/v1/documents/{document_id}")

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}"))

    def wait_indexed(
        self,
        document_ids: Sequence[str],
        timeout_s: float = 300.0,
        poll_s: float = 0.5,
        on_final: Callable[[str, dict[str, Any]], None] | None = None,
        raise_on_timeout: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """Poll until every document is indexed or failed; returns their final records."""
        return wait_until_final(
            document_ids,
            self.document,
            lambda doc: str(doc["status"]),
            timeout_s,
            poll_s=poll_s,
            on_final=on_final,
            raise_on_timeout=raise_on_timeout,
        )

    # -- collections (knowledge bases) ------------------------------------------------------
    def create_collection(self, name: str, **settings: Any) -> dict[str, Any]:
        """``settings``: description, embedding_profile, chunk_max_tokens,
        chunk_overlap_tokens, llm_model, sensitivity, unsupported_policy."""
        body = {"name": name, **{k: v for k, v in settings.items() if v is not None}}
        return dict(self._request("POST", "/v1/collections", json=body))

    def collections(self) -> dict[str, Any]:
        """{"collections": [...], "embedding_profiles": [...]}"""
        return dict(self._request("GET", "/v1/collections"))

    def collection(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/collections/{name}"))

    def delete_collection(self, name: str) -> None:
        self._request("DELETE", f"/v1/collections/{name}")

    # -- questions -------------------------------------------------------------------------
    def query(self, question: str, **options: Any) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/query", json={"question": question, **options}))

    def query_stream(self, question: str, **options: Any) -> Iterator[tuple[str, Any]]:
        """Yields (event, data) pairs: ("token", {"text"}), ("answer", {...}), ("done", {})."""
        body = {"question": question, "stream": True, **options}
        with self._http.stream("POST", "/v1/query", json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, json.loads(line[5:].strip())

    def ready(self) -> dict[str, Any]:
        response = self._http.get("/readyz")
        return dict(response.json())

    # -- re-index (admin) ------------------------------------------------------------------
    def reindex_start(self, **body: Any) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/admin/reindex", json=body))

    def reindex_jobs(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/admin/reindex")["jobs"])

    def reindex_status(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/admin/reindex/{job_id}"))

    def reindex_step(self, job_id: str, step: str) -> dict[str, Any]:
        """``step``: resume, switch, rollback, finish or abort."""
        return dict(self._request("POST", f"/v1/admin/reindex/{job_id}/{step}"))
