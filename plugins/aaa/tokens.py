"""HS256 JSON Web Tokens: the signing secret from the environment, issue and decode.

Only HS256 is accepted: a token naming another algorithm (``none`` included) is
refused before its signature is even looked at. Expiry is checked against the
caller's clock, so the service and its tests share one notion of now.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from corec_tasks.errors import ConfigurationError
from plugins.aaa.errors import TokenExpiredError, TokenInvalidError
from plugins.trading.models import Role

SECRET_ENV = "COREC_JWT_SECRET"
MIN_SECRET_BYTES = 32
ALGORITHM = "HS256"
_REQUIRED = ["exp", "iat", "iss", "sub", "jti", "role", "username"]


def secret_from_env(environ: Mapping[str, str] | None = None) -> bytes:
    """The signing secret from ``COREC_JWT_SECRET``; unset or short is a named error."""
    env = os.environ if environ is None else environ
    value = env.get(SECRET_ENV, "")
    hint = "e.g. export COREC_JWT_SECRET=$(openssl rand -hex 32)"
    if not value:
        raise ConfigurationError([(SECRET_ENV, f"is not set; {hint}")], "environment")
    secret = value.encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            [(SECRET_ENV, f"is {len(secret)} bytes, {MIN_SECRET_BYTES} are needed; {hint}")],
            "environment",
        )
    return secret


@dataclass(frozen=True)
class Claims:
    """Who a verified token speaks for."""

    user_id: int
    username: str
    role: Role
    session_id: str
    issued_at: datetime
    expires_at: datetime


def issue(secret: bytes, claims: Claims, *, issuer: str) -> str:
    """Sign ``claims`` (whole seconds, as JWT timestamps are)."""
    payload = {
        "sub": str(claims.user_id),
        "username": claims.username,
        "role": claims.role.value,
        "jti": claims.session_id,
        "iat": int(claims.issued_at.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
        "iss": issuer,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode(secret: bytes, token: str, *, now: datetime, issuer: str) -> Claims:
    """Check algorithm, signature, issuer, required claims and expiry; return the claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenInvalidError("not a well-formed JWT") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise TokenInvalidError(f"token algorithm {alg!r} is refused; only {ALGORITHM} is accepted")
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            # Time claims are checked below against the caller's clock, not time.time().
            options={
                "require": _REQUIRED,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenInvalidError(
            "token signature does not match (altered, or signed with another secret)"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise TokenInvalidError(f"invalid token: {exc}") from None
    try:
        claims = Claims(
            user_id=int(payload["sub"]),
            username=str(payload["username"]),
            role=Role(payload["role"]),
            session_id=str(payload["jti"]),
            issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
        )
    except (TypeError, ValueError) as exc:
        raise TokenInvalidError(f"invalid token claims: {exc}") from None
    if now >= claims.expires_at:
        raise TokenExpiredError(f"token expired at {claims.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    return claims
