"""The trading layer's ORM models (seed 003 §6-7) and its database helpers.

Portable across PostgreSQL (the cluster, migrated by ``corec db upgrade``) and
SQLite (one node: ``DATABASE_URL=sqlite:///trading.db``, schema by ``create_schema``).
"""
