"""capital_pool's Alembic branch; a package so setuptools ships it (alembic skips ``__init__``)."""
