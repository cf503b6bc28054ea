"""The AAA plugin's options and password hashing."""

from __future__ import annotations

import pytest

from corec_tasks.errors import ConfigurationError
from plugins.aaa.config import AAAConfig, load_config
from plugins.aaa.passwords import Passwords
from plugins.aaa.service import AAAPlugin

FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8, "argon2_parallelism": 1}


def test_seed_style_defaults() -> None:
    assert AAAPlugin.plugin_params == AAAConfig().model_dump()
    assert AAAPlugin.plugin_params["session_timeout"] == 3600
    assert AAAPlugin.plugin_params["max_login_attempts"] == 5
    assert load_config(None) == AAAConfig()


def test_errors_name_the_plugin_and_key() -> None:
    with pytest.raises(ConfigurationError) as err:
        load_config({"max_login_attempt": 3, "session_timeout": 0})
    keys = {key for key, _ in err.value.problems}
    assert keys == {"plugins.aaa.max_login_attempt", "plugins.aaa.session_timeout"}
    assert "aaa plugin config" in str(err.value)


def test_the_token_secret_is_refused_in_config() -> None:
    with pytest.raises(ConfigurationError, match="set COREC_JWT_SECRET in the environment"):
        load_config({"token_secret": "hunter2"})


def test_argon2_memory_must_cover_the_lanes() -> None:
    with pytest.raises(ConfigurationError, match="at least 8 x argon2_parallelism"):
        load_config({"argon2_memory_cost": 8, "argon2_parallelism": 2})


def test_passwords_hash_verify_and_rehash() -> None:
    fast = Passwords(load_config(FAST))
    stored = fast.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert fast.verify(stored, "correct horse battery")
    assert not fast.verify(stored, "correct horse batterY")
    assert not fast.verify("not a hash", "correct horse battery")
    assert not fast.needs_rehash(stored)
    assert Passwords(load_config({**FAST, "argon2_time_cost": 2})).needs_rehash(stored)
