"""Pure logic of issue 12: measured load, own-history audit, alert rules, size caps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from corec_tasks.alerts import run_problems
from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import fold_history, update_load
from corec_tasks.blocks.entities import EntityArrays
from corec_tasks.blocks.model import BlockSpec, BlockTooLarge, SymbioticBlock, specs_from_config
from corec_tasks.blocks.store import StoredBlock
from corec_tasks.config import BlockConfig, parse_config
from corec_tasks.errors import ConfigurationError
from corec_tasks.modules.audit import own_history_anomalies
from corec_tasks.modules.sync import load_of, plan_redirections


def _stored(n: int = 10, **spec: Any) -> StoredBlock:
    s = BlockSpec(id="b", group="b", canal=1, processor="security_node", **spec)
    return StoredBlock(SymbioticBlock(s, EntityArrays.fresh(np.arange(n), 1)), version=1)


def test_load_is_an_ewma_that_drops_below_the_donor_bound_in_two_idle_cycles() -> None:
    s = _stored()
    update_load(s, 1.0)
    assert s.load == 1.0
    update_load(s, 0.0)
    update_load(s, 0.0)
    assert s.load is not None and s.load < 0.2


def test_sync_uses_measured_load_and_carga_only_before_the_first_run() -> None:
    spec = {"id": "a", "group": "a", "carga": 1.0, "max_entities": 200}
    assert load_of({"spec": spec}) == 1.0
    assert load_of({"spec": spec, "load": 0.05}) == 0.05
    metas = [{"spec": spec, "fitness": 0.0, "load": 0.0, "num_entidades": 100},
             {"spec": dict(spec, id="r"), "fitness": 0.9, "num_entidades": 100}]  # fmt: skip
    assert [m.to_dict() for m in plan_redirections(metas)] == [
        {"src": "a", "dst": "r", "count": 50}]  # fmt: skip
    metas[0]["load"] = 0.5  # busy: not a donor, whatever its configured carga
    assert plan_redirections(metas) == []


def test_redirection_plans_stay_within_max_size_mb() -> None:
    small = BlockSpec(id="r", group="r", canal=1, processor="x", max_entities=2000,
                      max_bytes=8 + 11 * 120).to_dict()  # fmt: skip
    donor = dict(small, id="d", max_bytes=1 << 20)
    metas = [{"spec": donor, "fitness": 0.0, "load": 0.0, "num_entidades": 200},
             {"spec": small, "fitness": 0.9, "num_entidades": 100}]  # fmt: skip
    (move,) = plan_redirections(metas)
    assert move.count == 20  # 120 fit, 100 there


def test_a_shard_above_max_size_mb_is_refused_with_the_key() -> None:
    with pytest.raises(BlockTooLarge) as exc:
        specs_from_config([BlockConfig(id="x", canal=1, entidades=100_000,
                                       entidades_por_bloque=100_000)])  # fmt: skip
    assert exc.value.problems[0][0] == "bloques.x.max_size_mb"
    assert "1100008 bytes" in exc.value.problems[0][1]


def test_stream_key_is_validated() -> None:
    block = {"id": "a", "canal": 1, "entidades": 1, "stream": "market data"}
    with pytest.raises(ConfigurationError, match=r"bloques\[0\]\.stream"):
        parse_config({"bloques": [block]})
    ok = parse_config({"bloques": [dict(block, stream="market_data")]})
    assert specs_from_config(ok.bloques)[0][0].stream == "market_data"


def test_a_fed_block_runs_one_entity_per_payload_from_its_cursor() -> None:
    s = _stored(10)
    payloads = [{"price": 1.0}, {"price": 2.0}, {"price": 3.0}]
    r = s.block.run(1, default_registry(), payloads=payloads, window=(8, 3))
    assert (r.selected, r.inputs, r.load) == (3, 3, 0.3)
    idle = s.block.run(2, default_registry(), payloads=[], window=(1, 0))
    assert (idle.selected, idle.inputs, idle.load, idle.fitness) == (0, 0, 0.0, 0.0)


def test_history_excludes_the_run_it_judges() -> None:
    s = _stored()
    for fit in (0.9, 0.91, 0.89):
        fold_history(s)
        s.last_result = {"fitness": fit, "errors": 0, "selected": 10, "cycle": 1}
    fold_history(s)
    assert s.hist["n"] == 3
    meta = {"spec": {"id": "b"}, "hist": s.hist,
            "last_result": {"fitness": 0.3, "errors": 6, "selected": 10, "cycle": 9}}  # fmt: skip
    (a,) = own_history_anomalies([meta])
    assert a.cycle == 9 and "fitness 0.300 vs its own mean 0.90" in a.reason
    meta["last_result"] = {"fitness": 0.9, "errors": 0, "selected": 10, "cycle": 9}
    assert own_history_anomalies([meta]) == []


def test_alert_rules() -> None:
    spec = {"max_errores": 0.05, "min_fitness": 0.2, "processor": "p"}
    base = {"block_id": "b", "cycle": 1, "selected": 100, "errors": 0, "fitness": 0.9,
            "num_entidades": 100, "repaired": 0}  # fmt: skip
    assert run_problems(base, spec) == []
    assert run_problems(dict(base, selected=0, fitness=0.0), spec) == []  # idle, not unhealthy
    kinds = [p[1:3] for p in run_problems(dict(base, errors=50, repaired=50, fitness=0.1,
                                                processor_error="boom"), spec)]  # fmt: skip
    assert kinds == [("plugin", "p"), ("block.unhealthy", "b"), ("block.self_repair", "b")]
