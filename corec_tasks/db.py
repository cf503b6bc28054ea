"""PostgreSQL connection helpers: URL normalisation and engines."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from corec_tasks.errors import ConfigurationError


def sqlalchemy_url(url: str) -> str:
    """Map a user's ``postgresql://`` (or ``postgres://``) URL to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if not url.startswith(("postgresql+psycopg://", "sqlite")):
        raise ConfigurationError(
            [("DATABASE_URL", "must be a postgresql:// URL (or sqlite:// for the trading layer)")]
        )
    return url


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg.connect() takes (no SQLAlchemy driver suffix)."""
    u = make_url(sqlalchemy_url(url)).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: object) -> Engine:
    """An Engine on psycopg 3 with pre-ping, so a restarted server is survived."""
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(sqlalchemy_url(url), **kwargs)


def redact(url: str) -> str:
    """A URL safe to print: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
