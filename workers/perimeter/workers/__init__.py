"""Celery workers: thin task wrappers around :mod:`perimeter.ingest`."""
