"""Settings: precedence of server URLs and environment validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corec_tasks.db import libpq_url, sqlalchemy_url
from corec_tasks.errors import ConfigurationError, ServiceError
from corec_tasks.settings import load_settings

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("REDIS_URL", "DATABASE_URL", "CORE_INSTANCE_ID", "COREC_REDIS_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COREC_DATA_DIR", str(tmp_path / ".corec"))
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "small_config.json"))


def test_env_wins_over_file_and_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/3")
    monkeypatch.setenv("CORE_INSTANCE_ID", "node7")
    s = load_settings(DATA / "seed_sample_config.json")
    assert s.redis_url == "redis://example:6379/3"
    assert s.instance_id == "node7"
    # db_config from the file is used when DATABASE_URL is unset
    assert s.database_url == "postgresql://postgres:your_password@localhost:5432/corec_db"


def test_embedded_state_is_the_fallback(tmp_path: Path) -> None:
    s = load_settings()
    with pytest.raises(ServiceError, match="corec services up"):
        _ = s.redis_url
    (tmp_path / ".corec").mkdir()
    state = {"redis_url": "redis://127.0.0.1:9/0", "database_url": "postgresql://x@/corec"}
    (tmp_path / ".corec" / "services.json").write_text(json.dumps(state))
    assert s.redis_url == "redis://127.0.0.1:9/0"
    assert s.database_url == "postgresql://x@/corec"
    assert s.uses_embedded


def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREC_STREAM_MAXLEN", "ten")
    with pytest.raises(ConfigurationError, match="COREC_STREAM_MAXLEN"):
        load_settings()


def test_postgres_urls_map_to_psycopg3() -> None:
    assert sqlalchemy_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert libpq_url("postgresql+psycopg://u:p@h:1/d") == "postgresql://u:p@h:1/d"
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        sqlalchemy_url("mysql://u@h/d")


def test_plugin_config_file_is_found_beside_the_config_and_a_missing_one_is_named(
    tmp_path: Path,
) -> None:
    data = json.loads((DATA / "small_config.json").read_text())
    data["plugins"] = [{"name": "feeds", "config_path": "feeds.json"},
                       {"name": "pipeline", "config_path": "nowhere.json"},
                       {"name": "aaa"}]  # fmt: skip
    (tmp_path / "feeds.json").write_text("{}")
    (tmp_path / "nowhere.json").write_text("{}")
    cfg = tmp_path / "corec_config.json"
    cfg.write_text(json.dumps(data))
    s = load_settings(cfg)  # the config check wants the files to exist at load...
    (tmp_path / "nowhere.json").unlink()  # ...one removed since is named when used
    assert s.plugin_config_file("feeds") == tmp_path / "feeds.json"
    assert s.plugin_config_file("aaa") is None  # no config_path: the plugin's defaults
    assert s.plugin_config_file("capital_pool") is None  # no entry
    with pytest.raises(ConfigurationError) as err:
        s.plugin_config_file("pipeline")
    assert err.value.problems == [("plugins.pipeline.config_path", "nowhere.json not found")]


def test_trusted_proxies_are_empty_by_default_and_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    monkeypatch.delenv("COREC_TRUSTED_PROXIES", raising=False)
    assert load_settings().env.proxies == ()
    monkeypatch.setenv("COREC_TRUSTED_PROXIES", " 10.0.0.5, 172.16.0.0/12,::1 ,")
    assert load_settings().env.proxies == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("172.16.0.0/12"),
        ipaddress.ip_network("::1/128"),
    )


@pytest.mark.parametrize("key", ["COREC_TRUSTED_PROXIES", "COREC_API_METRICS_FROM"])
@pytest.mark.parametrize("bad", ["10.0.0.1/8", "proxy.example", "10.0.0.300", "*", "1.2.3.4/33"])
def test_a_bad_network_list_names_the_key(
    monkeypatch: pytest.MonkeyPatch, bad: str, key: str
) -> None:
    """A mask with host bits (``10.0.0.1/8``) is refused: a typo must not widen the trust."""
    monkeypatch.setenv(key, f"127.0.0.1,{bad}")
    with pytest.raises(ConfigurationError, match=key) as info:
        load_settings()
    assert repr(bad) in str(info.value)


def test_api_metrics_readers_default_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    monkeypatch.delenv("COREC_API_METRICS_FROM", raising=False)
    assert load_settings().env.metrics_readers == ()
    monkeypatch.setenv("COREC_API_METRICS_FROM", "10.0.0.0/8")
    assert load_settings().env.metrics_readers == (ipaddress.ip_network("10.0.0.0/8"),)
