"""Capital grants on real Redis: bound, signed, short-lived and single-use."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import jwt
import pytest
import redis

from corec_tasks.errors import ConfigurationError
from corec_tasks.keyfile import create_key_file
from corec_tasks.settings import Settings
from plugins.capital_pool import grants
from plugins.capital_pool.grants import GrantError, load_key, mint, verify

pytestmark = pytest.mark.integration

KEY = b"g" * 40


def _mint(**kw: object) -> str:
    args: dict[str, object] = dict(member="alice", action="capital.withdraw", amount="100.00",
                                   idempotency_key="k-1", user_id=7, username="alice", key=KEY)
    args.update(kw)
    return mint(**args)  # type: ignore[arg-type]


def _verify(grant: str, settings: Settings, **kw: object) -> grants.Principal:
    args: dict[str, object] = dict(member="alice", action="capital.withdraw", amount="100.00",
                                   idempotency_key="k-1", key=KEY, settings=settings)
    args.update(kw)
    return verify(grant, **args)  # type: ignore[arg-type]


def test_a_grant_is_used_once(settings: Settings, redis_client: redis.Redis) -> None:
    grant = _mint()
    who = _verify(grant, settings, redis_client=redis_client)
    assert (who.user_id, who.username, who.member, who.amount) == (7, "alice", "alice", "100.00")
    with pytest.raises(GrantError, match="already used"):
        _verify(grant, settings, redis_client=redis_client)
    # The mark expires with the grant, under the deployment's prefix.
    mark = f"{settings.redis_prefix}capital_pool:grant_used:{who.grant_id}"
    assert 0 < redis_client.ttl(mark) <= grants.TTL_S + 1


def test_concurrent_uses_let_exactly_one_through(settings: Settings,
                                                 redis_client: redis.Redis) -> None:
    grant = _mint()

    def use(_: int) -> bool:
        try:
            _verify(grant, settings, redis_client=redis_client)
        except GrantError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(use, range(16))) == 1


def test_a_redelivery_of_the_same_task_passes(settings: Settings,
                                              redis_client: redis.Redis) -> None:
    grant = _mint()
    _verify(grant, settings, redis_client=redis_client, use_id="task-1")
    _verify(grant, settings, redis_client=redis_client, use_id="task-1")
    with pytest.raises(GrantError, match="already used"):
        _verify(grant, settings, redis_client=redis_client, use_id="task-2")


def test_expired_grants_are_refused(settings: Settings, redis_client: redis.Redis) -> None:
    old = datetime.now(UTC) - timedelta(seconds=grants.TTL_S + 1)
    with pytest.raises(GrantError, match="expired"):
        _verify(_mint(now=old), settings, redis_client=redis_client)
    fresh = _mint(ttl_s=2)
    with pytest.raises(GrantError, match="expired"):
        _verify(fresh, settings, redis_client=redis_client,
                now=datetime.now(UTC) + timedelta(seconds=3))


@pytest.mark.parametrize(
    ("field", "value"),
    [("member", "bob"), ("action", "capital.contribute"), ("amount", "1000.00"),
     ("amount", "100.01"), ("amount", "1e400"), ("amount", "NaN"), ("idempotency_key", "k-2"),
     ("idempotency_key", None)],
)  # fmt: skip
def test_a_grant_moves_only_what_it_names(
    settings: Settings, redis_client: redis.Redis, field: str, value: object
) -> None:
    with pytest.raises(GrantError, match=r"grant is for capital\.withdraw of 100\.00"):
        _verify(_mint(), settings, redis_client=redis_client, **{field: value})


def test_tampered_or_foreign_grants_are_refused(settings: Settings,
                                                redis_client: redis.Redis) -> None:
    grant = _mint()
    head, body, sig = grant.split(".")
    forged = jwt.encode({**jwt.decode(grant, options={"verify_signature": False}),
                         "amt": "100000.00"}, b"x" * 40, algorithm="HS256")  # fmt: skip
    for bad, why in [(f"{head}.{body}.{sig[:-2]}AA", "signature"), (forged, "signature"),
                     (_mint(key=b"o" * 40), "signature"), ("", "required"), (None, "required"),
                     ("junk", "well-formed"),
                     (jwt.encode({"a": 1}, None, algorithm="none"), "algorithm")]:  # fmt: skip
        with pytest.raises(GrantError, match=why):
            _verify(bad, settings, redis_client=redis_client)  # type: ignore[arg-type]
    # A login token (another audience and claims) is no grant, even with the same key.
    login = jwt.encode({"sub": "1", "exp": 2**40, "iat": 0, "iss": "corec"}, KEY, "HS256")
    with pytest.raises(GrantError, match="invalid grant"):
        _verify(login, settings, redis_client=redis_client)
    with pytest.raises(GrantError, match="no grant for"):
        _mint(action="users.add")
    assert _verify(_mint(amount=Decimal("100.00")), settings, redis_client=redis_client)
    # The same money in another notation (a task holding the amount parsed to cents) passes.
    assert _verify(_mint(amount="100.5"), settings, redis_client=redis_client,
                   amount=Decimal("100.50")).amount == "100.50"  # fmt: skip


def test_the_key_comes_from_the_environment_or_one_private_file(
    settings: Settings, tmp_path: Path
) -> None:
    assert load_key(settings, {"COREC_GRANT_KEY": "e" * 32}) == b"e" * 32
    with pytest.raises(ConfigurationError, match="COREC_GRANT_KEY"):
        load_key(settings, {"COREC_GRANT_KEY": "short"})
    with pytest.raises(ConfigurationError, match="must differ"):
        load_key(settings, {"COREC_GRANT_KEY": "s" * 40, "COREC_JWT_SECRET": "s" * 40})
    # No env and no file: refused, naming the variable, the file and `corec keys init`.
    path = Path(settings.data_dir) / "grant.key"
    path.unlink()  # the settings fixture made the node's keys, as `corec keys init` does
    with pytest.raises(ConfigurationError, match=r"COREC_GRANT_KEY is not set and .*grant\.key "
                                                 r"does not exist: run `corec keys init`"):
        load_key(settings, {})
    assert not path.exists()  # a process never makes a key of its own
    # `corec keys init` from several processes at once: one key, the same for all.
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: create_key_file(path), range(16)))
    keys = {load_key(settings, {}) for _ in range(4)}
    assert made.count(True) == 1 and len(keys) == 1 and len(keys.pop()) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".grant-")] == []
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_key(settings, {})
    # With settings alone, verify finds the key and Redis by itself.
    os.chmod(path, 0o600)
    grant = _mint(key=load_key(settings, {}))
    assert _verify(grant, settings, key=None).member == "alice"


def test_operator_grants_name_the_operator_and_never_a_user(
    settings: Settings, redis_client: redis.Redis
) -> None:
    who = _verify(_mint(user_id=None, username="operator:ops@node-1"), settings,
                  redis_client=redis_client)  # fmt: skip
    assert (who.user_id, who.principal) == (None, "operator:ops@node-1")
    assert _verify(_mint(), settings, redis_client=redis_client).principal == "user:alice"
    for user_id, username in ((None, "alice"), (7, "operator:ops")):
        with pytest.raises(GrantError, match="minted for a user"):
            _mint(user_id=user_id, username=username)
    # A grant whose claims mix both (only a holder of the key could sign one) is refused.
    mixed = jwt.encode({**jwt.decode(_mint(), options={"verify_signature": False}),
                        "by": "operator:x"}, KEY, algorithm="HS256")  # fmt: skip
    with pytest.raises(GrantError, match="neither a user nor an operator"):
        _verify(mixed, settings, redis_client=redis_client)


def test_the_stream_key_is_a_key_of_its_own(settings: Settings) -> None:
    """COREC_STREAM_KEY (signed streams) follows the grant key's rules, in its own file."""
    from corec_tasks.streams import signing

    assert signing.load_key(settings, {"COREC_STREAM_KEY": "f" * 32}) == b"f" * 32
    with pytest.raises(ConfigurationError, match="COREC_STREAM_KEY"):
        signing.load_key(settings, {"COREC_STREAM_KEY": "short"})
    with pytest.raises(ConfigurationError, match="must differ from COREC_GRANT_KEY"):
        signing.load_key(settings, {"COREC_STREAM_KEY": "g" * 40, "COREC_GRANT_KEY": "g" * 40})
    key = signing.load_key(settings, {})
    path = Path(settings.data_dir) / "stream.key"
    assert key == path.read_bytes() and len(key) == 64 and key != load_key(settings, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
