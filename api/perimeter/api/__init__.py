"""HTTP API (FastAPI). Thin: validates requests, calls ingest/ and retrieval/, shapes responses."""
