"""JWT signing secret, issue and decode: expiry, tampering, algorithms."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from corec_tasks.errors import ConfigurationError
from plugins.aaa.errors import TokenExpiredError, TokenInvalidError
from plugins.aaa.tokens import SECRET_ENV, Claims, decode, issue, secret_from_env
from plugins.trading.models import Role

SECRET = b"s" * 32
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CLAIMS = Claims(1, "alice", Role.MEMBER, "jti-1", NOW, NOW + timedelta(seconds=60))


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_secret_comes_from_the_environment_and_is_long_enough() -> None:
    assert secret_from_env({SECRET_ENV: "x" * 32}) == b"x" * 32
    with pytest.raises(ConfigurationError, match="COREC_JWT_SECRET: is not set"):
        secret_from_env({})
    with pytest.raises(ConfigurationError, match="COREC_JWT_SECRET: is 31 bytes, 32 are needed"):
        secret_from_env({SECRET_ENV: "x" * 31})


def test_round_trip() -> None:
    token = issue(SECRET, CLAIMS, issuer="corec")
    assert decode(SECRET, token, now=NOW, issuer="corec") == CLAIMS


def test_expired_at_exp() -> None:
    token = issue(SECRET, CLAIMS, issuer="corec")
    assert decode(SECRET, token, now=NOW + timedelta(seconds=59), issuer="corec")
    with pytest.raises(TokenExpiredError, match="expired at 2025-06-01 12:01:00 UTC"):
        decode(SECRET, token, now=NOW + timedelta(seconds=60), issuer="corec")


def test_tampered_payload_other_secret_and_other_issuer_are_refused() -> None:
    token = issue(SECRET, CLAIMS, issuer="corec")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = ".".join([header, _b64({**claims, "role": "admin"}), signature])
    with pytest.raises(TokenInvalidError, match="signature does not match"):
        decode(SECRET, forged, now=NOW, issuer="corec")
    with pytest.raises(TokenInvalidError, match="signature does not match"):
        decode(b"t" * 32, token, now=NOW, issuer="corec")
    with pytest.raises(TokenInvalidError, match="issuer"):
        decode(SECRET, token, now=NOW, issuer="elsewhere")
    with pytest.raises(TokenInvalidError, match="not a well-formed JWT"):
        decode(SECRET, "garbage", now=NOW, issuer="corec")


def test_alg_none_and_other_algorithms_are_refused() -> None:
    good = issue(SECRET, CLAIMS, issuer="corec")
    payload = good.split(".")[1]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    with pytest.raises(TokenInvalidError, match="algorithm 'none' is refused"):
        decode(SECRET, unsigned, now=NOW, issuer="corec")
    hs512 = jwt.encode(
        jwt.decode(good, SECRET, algorithms=["HS256"], options={"verify_exp": False}),
        SECRET + SECRET,
        algorithm="HS512",
    )
    with pytest.raises(TokenInvalidError, match="algorithm 'HS512' is refused"):
        decode(SECRET, hs512, now=NOW, issuer="corec")


def test_missing_claims_are_refused() -> None:
    token = jwt.encode({"sub": "1", "iss": "corec", "exp": 2**40}, SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalidError, match="invalid token"):
        decode(SECRET, token, now=NOW, issuer="corec")
