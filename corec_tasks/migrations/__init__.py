"""Alembic migrations of the CoreC schema (run them with ``corec_tasks.storage.migrate``)."""
