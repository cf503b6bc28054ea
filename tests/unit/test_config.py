"""corec_config.json validation: the seed's sample passes; bad configs name the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corec_tasks.cli import main
from corec_tasks.config import load_config, parse_config, queue_for_channel
from corec_tasks.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "tests" / "data" / "seed_sample_config.json"


def seed() -> dict[str, Any]:
    return json.loads(SEED.read_text())


def test_seed_sample_loads_as_is() -> None:
    cfg = load_config(SEED)
    assert [b.id for b in cfg.all_blocks()] == [
        "enjambre_sensor", "nodo_seguridad", "ia_analisis", "example_block",
    ]  # fmt: skip
    assert sum(b.entidades for b in cfg.bloques) == 1_001_000
    assert cfg.total_entities == 1_002_000  # plus the plugin's block of 1,000
    assert cfg.bloques[0].autoreparacion.max_errores == 0.05
    assert cfg.bloques[2].autoreparacion.min_fitness == 0.2  # default where the seed omits it
    assert cfg.db_config is not None and cfg.db_config.url().endswith("@localhost:5432/corec_db")


#: Issue 12: the plugins' work as stream-fed blocks (capital intake, per-symbol signal).
INTAKE = {"bloque_id": "capital_intake", "canal": 1, "entidades": 1000, "max_size_mb": 1,
          "entidades_por_bloque": 1000, "max_errores": 0.2, "min_fitness": 0.2,
          "procesador": "capital_intake", "intervalo_s": 5, "stream": "capital_data",
          "min_entidades": 250}
SIGNAL = {"bloque_id": "feeds_signal", "canal": 3, "entidades": 1000, "max_size_mb": 1,
          "entidades_por_bloque": 1000, "max_errores": 0.05, "min_fitness": 0.2,
          "procesador": "market_signal", "intervalo_s": 60, "stream": "market_data"}


def test_shipped_default_is_the_seed_sample_without_secrets_plus_the_trading_plugins() -> None:
    shipped = json.loads((ROOT / "corec_config.json").read_text())
    expected = seed()
    del expected["db_config"], expected["redis_config"]
    expected["plugins"] += [
        {"name": "capital_pool", "enabled": True,
         "config_path": "plugins/capital_pool/capital_pool.yaml", "bloque": INTAKE},
        {"name": "feeds", "enabled": True, "config_path": "plugins/feeds/config.json",
         "bloque": SIGNAL},
        {"name": "pipeline", "enabled": True, "config_path": "plugins/pipeline/config.json"},
        # Their CLI groups (corec users|api|portfolio) come only from enabled plugins.
        {"name": "aaa", "enabled": True, "config_path": "plugins/aaa/config.json"},
        {"name": "core", "enabled": True},
        {"name": "portfolio", "enabled": True},
        {"name": "broker", "enabled": True},  # the pipeline requires it (its plugin.json)
    ]  # fmt: skip
    # Issue 12: the security node is fed by market_data (same 1,001,000 entities).
    expected["bloques"][1]["stream"] = "market_data"
    assert shipped == expected


def _broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(seed())
    mutate(data)
    return data


BROKEN = [
    (lambda d: d["bloques"][0].update(canal=0), "bloques[0].canal"),
    (lambda d: d["bloques"][1].update(entidades="many"), "bloques[1].entidades"),
    (lambda d: d["bloques"][0]["autoreparacion"].update(max_errores=1.5),
     "bloques[0].autoreparacion.max_errores"),
    (lambda d: d["bloques"][2].pop("id"), "bloques[2].id"),
    (lambda d: d["bloques"][0].update(min_entidades=1001), "bloques[0].min_entidades"),
    (lambda d: d["plugins"][0]["bloque"].update(min_fitness=-1), "plugins[0].bloque.min_fitness"),
    (lambda d: d["bloques"][0].update(entidadez=5), "bloques[0].entidadez"),
    (lambda d: d["db_config"].update(port=70000), "db_config.port"),
    (lambda d: d.update(bloques={}), "bloques"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "key"), BROKEN)
def test_broken_config_names_the_key(mutate: Any, key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_config(_broken(mutate))
    assert key in [k for k, _ in info.value.problems], info.value.problems


def test_duplicate_block_ids_are_refused() -> None:
    data = _broken(lambda d: d["plugins"][0]["bloque"].update(bloque_id="ia_analisis"))
    with pytest.raises(ConfigurationError, match="ia_analisis"):
        parse_config(data)


def test_missing_plugin_config_file_is_named(tmp_path: Path) -> None:
    data = _broken(lambda d: d["plugins"][0].update(config_path="plugins/nope/config.json"))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError) as info:
        load_config(path)
    assert info.value.problems[0][0] == "plugins[0].config_path"


def test_not_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "bloques": [,]\n}')
    with pytest.raises(ConfigurationError, match="line 2"):
        load_config(path)


def test_cli_config_check_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["config", "check", str(SEED), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["entities"] == 1_002_000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(lambda d: d["bloques"][0].update(canal=300, entidades=0))))
    res = runner.invoke(main, ["config", "check", str(bad)])
    assert res.exit_code == 1
    assert "bloques[0].canal" in res.output and "bloques[0].entidades" in res.output


def test_channels_map_to_queues() -> None:
    assert [queue_for_channel(c) for c in range(1, 6)] == [
        "generic", "security", "analysis", "alerts", "generation",
    ]  # fmt: skip
    assert queue_for_channel(200) == "generic"
