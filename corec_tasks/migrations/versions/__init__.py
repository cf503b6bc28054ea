"""Alembic revisions; a package so setuptools ships them (alembic skips ``__init__``)."""
