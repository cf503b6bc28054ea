"""Capital grants: what the API hands a capital task instead of the member's login token.

A grant is a short-lived (``TTL_S``, 60 s), single-use HS256 JWT bound to one member,
one action, one amount and one idempotency key, signed with the *grant key* (not the
login secret, and with its own audience), so a grant read from the broker or the
result backend moves nothing else, and nothing at all once it is used or expired.

The grant key is ``COREC_GRANT_KEY`` (at least 32 bytes) or, when that is unset, a
random key generated once under the data directory (``<data_dir>/grant.key``, mode
0600, created atomically so two processes starting together agree on one key). Every
API server and capital worker must share it: set ``COREC_GRANT_KEY`` on multi-node
deployments.

A grant names its *principal*: ``user:<username>`` when the API minted it for a logged-in
user (``uid`` is that user's id), ``operator:<name>`` when an operator minted it with
``corec capital grant`` (``uid`` is null). The ledger writes it into ``audit_log``.

Single use: ``verify`` marks the grant id in Redis (``SET NX``, expiring with the
grant); a second use is refused, except by the same ``use_id`` (Celery's redelivery of
the same task after a worker died), which the ledger's idempotency key makes harmless.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import redis

from corec_tasks.errors import CorecError
from corec_tasks.keyfile import env_key, key_file
from corec_tasks.settings import Settings
from plugins.capital_pool.audit import OPERATOR

KEY_ENV = "COREC_GRANT_KEY"
KEY_FILE = "grant.key"
TTL_S = 60
ALGORITHM = "HS256"
AUDIENCE = "corec:capital-grant"
ISSUER = "corec-api"
ACTIONS = frozenset({"capital.contribute", "capital.withdraw"})
_REQUIRED = ["exp", "iat", "aud", "iss", "jti", "sub", "act", "amt", "idk", "by"]



def kwargs_repr(kwargs: Mapping[str, Any]) -> str:
    """A capital task's ``kwargsrepr``: its kwargs with the grant hidden. Celery copies
    ``kwargsrepr`` into every task event (Flower, ``celery events``, anyone subscribed
    on the broker); the grant is single-use, but it need not be shown to them. Passing
    it also spares Celery a ``saferepr`` of the kwargs on every send."""
    return repr({k: "<grant>" if k == "grant" else v for k, v in kwargs.items()})


class GrantError(CorecError):
    """A grant was refused: expired, reused, tampered, or bound to another action."""


@dataclass(frozen=True)
class Principal:
    """Who authorised the action a verified grant allows: the API's logged-in user
    (``user_id`` set) or an operator (``user_id`` None, ``username`` ``operator:...``)."""

    user_id: int | None
    username: str
    member: str
    action: str
    amount: str
    idempotency_key: str
    grant_id: str
    expires_at: datetime

    @property
    def principal(self) -> str:
        """The name the audit log records: ``user:<username>`` or ``operator:<name>``."""
        return f"user:{self.username}" if self.user_id is not None else self.username


def load_key(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> bytes:
    """The grant key: ``COREC_GRANT_KEY``, else ``<data_dir>/grant.key``."""
    env = os.environ if environ is None else environ
    key = env_key(KEY_ENV, env, differ_from="COREC_JWT_SECRET")
    if key is not None:
        return key
    if settings is None:
        from corec_tasks.runtime import get_settings

        settings = get_settings()
    return key_file(Path(settings.data_dir) / KEY_FILE, "grant key", KEY_ENV)


def _amount(amount: str | Decimal) -> str:
    if isinstance(amount, Decimal):
        return f"{amount:f}"
    if isinstance(amount, str):
        return amount
    raise TypeError(f"amount must be a decimal string or Decimal, not {type(amount).__name__}")


def _same_amount(granted: object, given: object) -> bool:
    """Equal as money: the task may hold the amount parsed to cents ("100.5" -> 100.50)."""
    try:
        return Decimal(str(granted)) == Decimal(str(given))
    except (ArithmeticError, ValueError):
        return False


def mint(
    member: str,
    action: str,
    amount: str | Decimal,
    idempotency_key: str,
    *,
    user_id: int | None,
    username: str,
    key: bytes,
    ttl_s: int = TTL_S,
    now: datetime | None = None,
) -> str:
    """A grant letting ``action`` of ``amount`` on ``member``'s capital run once, with
    ``idempotency_key``, within ``ttl_s`` s; ``user_id``/``username`` authorised it (an
    operator: ``user_id`` None and ``username`` ``operator:<name>``)."""
    if action not in ACTIONS:
        raise GrantError(f"no grant for {action!r}: only {', '.join(sorted(ACTIONS))}")
    if (user_id is None) != username.startswith(OPERATOR):
        raise GrantError(f"a grant is minted for a user (user_id) or an {OPERATOR}... name, "
                         f"not {username!r} with user_id {user_id!r}")  # fmt: skip
    issued = int((now or datetime.now(UTC)).timestamp())
    payload = {
        "jti": uuid.uuid4().hex,
        "iat": issued,
        "exp": issued + ttl_s,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "sub": member,
        "act": action,
        "amt": _amount(amount),
        "idk": idempotency_key,
        "uid": user_id,
        "by": username,
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def verify(
    grant: str | None,
    member: str,
    action: str,
    amount: str | Decimal,
    idempotency_key: str | None,
    *,
    key: bytes | None = None,
    redis_client: redis.Redis | None = None,
    settings: Settings | None = None,
    use_id: str | None = None,
    now: datetime | None = None,
) -> Principal:
    """The principal of a valid grant for exactly this call, marked used; GrantError if
    it is missing, badly signed, expired, bound to anything else, or already used.

    ``key`` defaults to ``load_key(settings)``, ``redis_client`` to one on ``settings``
    (the process's settings when None); ``use_id`` (the Celery task id) lets a
    redelivery of the same task pass again.
    """
    if settings is None and (key is None or redis_client is None):
        from corec_tasks.runtime import get_settings

        settings = get_settings()
    claims = _decode(grant, key if key is not None else load_key(settings), now)
    user_id = _user_id(claims)
    wanted = {"sub": member, "act": action, "amt": _amount(amount), "idk": idempotency_key}
    for claim, value in wanted.items():
        same = _same_amount(claims[claim], value) if claim == "amt" else claims[claim] == value
        if not same:
            raise GrantError(
                f"grant is for {claims['act']} of {claims['amt']} on {claims['sub']!r} "
                f"(key {claims['idk']!r}), not {action} of {wanted['amt']} on {member!r} "
                f"(key {idempotency_key!r})"
            )
    expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
    remaining = int((expires - (now or datetime.now(UTC))).total_seconds()) + 1
    if redis_client is None:
        assert settings is not None
        from corec_tasks.redis_conn import redis_client as make_client

        redis_client = make_client(settings)
    prefix = settings.redis_prefix if settings is not None else ""
    mark = f"{prefix}capital_pool:grant_used:{claims['jti']}"
    if not redis_client.set(mark, use_id or uuid.uuid4().hex, nx=True, ex=max(remaining, 1)):
        seen = redis_client.get(mark)
        if use_id is None or (seen.decode() if isinstance(seen, bytes) else seen) != use_id:
            raise GrantError(f"grant {claims['jti']} was already used (grants are single-use)")
    return Principal(
        user_id=user_id, username=str(claims["by"]), member=member, action=action,
        amount=_amount(amount), idempotency_key=str(idempotency_key), grant_id=str(claims["jti"]),
        expires_at=expires,
    )  # fmt: skip


def _user_id(claims: dict[str, Any]) -> int | None:
    """The user's id, or None for an operator's grant; a grant mixing both is refused."""
    uid, by = claims.get("uid"), str(claims["by"])
    if uid is None and by.startswith(OPERATOR):
        return None
    if isinstance(uid, int) and not isinstance(uid, bool) and not by.startswith(OPERATOR):
        return uid
    raise GrantError("invalid grant: its principal is neither a user nor an operator")


def _unverified_alg(grant: str) -> object:
    """The ``alg`` a refused grant names (for the message only; nothing trusts it)."""
    try:
        return jwt.get_unverified_header(grant).get("alg")
    except jwt.InvalidTokenError:
        return None


def _decode(grant: str | None, key: bytes, now: datetime | None) -> dict[str, Any]:
    if not grant:
        raise GrantError("a capital grant is required (grant=...): act through `corec api`, "
                         "or mint one with `corec capital grant`")
    try:  # one parse: PyJWT refuses any algorithm but ALGORITHM before checking the signature
        claims: dict[str, Any] = jwt.decode(
            grant, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
            options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
        )  # fmt: skip
    except jwt.InvalidAlgorithmError:
        alg = _unverified_alg(grant)
        raise GrantError(f"grant algorithm {alg!r} is refused; only {ALGORITHM}") from None
    except jwt.InvalidSignatureError:
        raise GrantError("grant signature does not match (altered, or another grant key)") from None
    except jwt.DecodeError:
        raise GrantError("grant is not a well-formed JWT") from None
    except jwt.InvalidTokenError as exc:
        raise GrantError(f"invalid grant: {exc}") from None
    at = now or datetime.now(UTC)
    if int(at.timestamp()) >= int(claims["exp"]):
        expired = datetime.fromtimestamp(int(claims["exp"]), UTC)
        raise GrantError(f"grant expired at {expired:%Y-%m-%d %H:%M:%S} UTC; ask the API again")
    return claims
