"""Pure planning of the sync module (redirections, merges, splits) and the audit's scoring."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.entities import EntityArrays
from corec_tasks.blocks.model import BlockSpec, SymbioticBlock
from corec_tasks.errors import CorecError
from corec_tasks.modules.audit import AuditRow, find_anomalies
from corec_tasks.modules.sync import Merge, Move, Split, plan_merges, plan_redirections, plan_splits


def meta(
    bid: str,
    fitness: float,
    n: int,
    carga: float = 1.0,
    group: str = "g",
    max_entities: int = 2000,
) -> dict[str, Any]:
    """A block meta as BlockStore.metas() returns it (only the keys planning reads)."""
    spec = {"id": bid, "group": group, "canal": 1, "processor": "sensor_swarm", "carga": carga,
            "max_entities": max_entities}  # fmt: skip
    return {"spec": spec, "fitness": fitness, "num_entidades": n, "last_cycle": 1,
            "last_result": None, "extra": {}, "version": 1}  # fmt: skip


def donor(bid: str, n: int, **kw: Any) -> dict[str, Any]:
    return meta(bid, 0.1, n, carga=0.1, **kw)


# -- redirections ----------------------------------------------------------------------


def test_a_donor_gives_half_to_the_receiver_with_most_room() -> None:
    metas = [donor("weak", 100), meta("strong", 0.9, 1000), meta("stronger", 0.95, 500),
             meta("middling", 0.5, 100)]  # fmt: skip
    assert plan_redirections(metas) == [Move("weak", "stronger", 50)]


def test_a_donor_keeps_its_min_entities() -> None:
    """``min_entidades`` (capital_intake ships 250): an idle intake keeps enough entities
    for a burst instead of halving down to one."""
    floored = donor("intake", 300)
    floored["spec"]["min_entities"] = 250
    at_floor = donor("intake2", 250)
    at_floor["spec"]["min_entities"] = 250
    metas = [floored, at_floor, meta("busy", 0.9, 100)]
    assert plan_redirections(metas) == [Move("intake", "busy", 50)]


def test_thresholds_are_strict() -> None:
    receiver = meta("r", 0.9, 10)
    assert plan_redirections([meta("a", 0.3, 100, carga=0.1), receiver]) == []  # fitness 0.3
    assert plan_redirections([meta("a", 0.1, 100, carga=0.2), receiver]) == []  # load 0.2
    assert plan_redirections([donor("a", 100), meta("r", 0.8, 10)]) == []  # fitness 0.8
    assert plan_redirections([meta("a", 0.29, 100, carga=0.19), meta("r", 0.81, 10)]) == [
        Move("a", "r", 50)
    ]


def test_thresholds_are_configurable() -> None:
    metas = [meta("a", 0.4, 100, carga=0.5), meta("r", 0.7, 10)]
    assert plan_redirections(metas) == []
    moves = plan_redirections(metas, donor_fitness=0.5, donor_load=0.6, receiver_fitness=0.6)
    assert moves == [Move("a", "r", 50)]


@pytest.mark.parametrize(("size", "moved"), [(1, None), (2, 1), (3, 1), (101, 50), (1000, 500)])
def test_half_moves_at_least_one_and_the_donor_keeps_one(size: int, moved: int | None) -> None:
    moves = plan_redirections([donor("a", size), meta("r", 0.9, 0)])
    assert moves == ([] if moved is None else [Move("a", "r", moved)])


def test_receiver_capacity_is_respected() -> None:
    # r has room for 40: the first donor fills it partly, the second takes the rest.
    moves = plan_redirections([donor("a", 100), donor("b", 100), meta("r", 0.9, 1960)])
    assert moves == [Move("a", "r", 40)]
    full = plan_redirections([donor("a", 100), meta("r", 0.9, 2000)])
    assert full == []
    spread = plan_redirections([donor("a", 100), donor("b", 100), meta("r1", 0.9, 1970),
                                meta("r2", 0.9, 1960)])  # fmt: skip
    assert spread == [Move("a", "r2", 40), Move("b", "r1", 30)]


def test_weakest_donor_goes_first() -> None:
    metas = [meta("a", 0.2, 100, carga=0.1), meta("b", 0.05, 100, carga=0.1), meta("r", 0.9, 1950)]
    assert plan_redirections(metas) == [Move("b", "r", 50)]


_metas = st.lists(
    st.tuples(
        st.floats(0.0, 1.0),
        st.floats(0.0, 1.0),
        st.integers(0, 300),
        st.integers(1, 300),
    ),
    min_size=0,
    max_size=12,
).map(
    lambda rows: [
        meta(f"b{i}", f, n, carga=c, max_entities=m) for i, (f, c, n, m) in enumerate(rows)
    ]
)


@settings(max_examples=200, deadline=None)
@given(_metas)
def test_planned_moves_respect_every_rule(metas: list[dict[str, Any]]) -> None:
    by_id = {m["spec"]["id"]: m for m in metas}
    moves = plan_redirections(metas)
    incoming: dict[str, int] = {}
    sources = [m.src for m in moves]
    assert len(sources) == len(set(sources))  # each donor gives once per plan
    for mv in moves:
        src, dst = by_id[mv.src], by_id[mv.dst]
        assert src["fitness"] < 0.3 and src["spec"]["carga"] < 0.2
        assert dst["fitness"] > 0.8
        assert 1 <= mv.count <= max(1, src["num_entidades"] // 2)
        assert mv.count <= src["num_entidades"] - 1
        incoming[mv.dst] = incoming.get(mv.dst, 0) + mv.count
    for dst, count in incoming.items():
        assert by_id[dst]["num_entidades"] + count <= by_id[dst]["spec"]["max_entities"]


# -- merges and splits -----------------------------------------------------------------


def test_merges_pair_donors_of_one_group_that_fit_together() -> None:
    metas = [donor("a", 300), donor("b", 400), donor("c", 100, group="other"),
             meta("d", 0.9, 100)]  # fmt: skip
    assert plan_merges(metas) == [Merge(keep="b", absorb="a")]
    assert plan_merges([donor("a", 1500), donor("b", 1500)]) == []  # 3000 > 2000
    assert plan_merges([donor("a", 1000), donor("b", 1000)]) == [Merge("b", "a")]  # exactly fits


def test_merges_use_each_block_once_and_the_smaller_cap() -> None:
    metas = [donor("a", 100), donor("b", 200), donor("c", 300), donor("d", 1900)]
    merges = plan_merges(metas)
    used = [x for m in merges for x in (m.keep, m.absorb)]
    assert len(used) == len(set(used))
    # a (smallest) takes the largest partner it fits with: d (100 + 1900 = 2000).
    assert merges == [Merge("d", "a"), Merge("c", "b")]
    assert plan_merges([donor("a", 100, max_entities=250), donor("b", 200)]) == []


def test_merges_ignore_non_donors() -> None:
    assert plan_merges([donor("a", 10), meta("b", 0.1, 10, carga=0.5)]) == []


def test_splits_oversized_blocks_with_fresh_ids() -> None:
    metas = [meta("a", 0.9, 2001), meta("b", 0.9, 2000), meta("a.1", 0.9, 10)]
    assert plan_splits(metas) == [Split("a", "a.2")]
    assert plan_splits([meta("x", 0.5, 5, max_entities=1)]) == [Split("x", "x.1")]


# -- audit -----------------------------------------------------------------------------


def _population(n: int, per: int = 1000, cycles: int = 3, seed: int = 0) -> list[AuditRow]:
    """Rows of ``n`` sensor blocks after ``cycles`` real runs (deterministic per block id)."""
    registry = default_registry()
    rows = []
    for i in range(n):
        spec = BlockSpec(f"b{seed}-{i}", "g", 1, "sensor_swarm", max_entities=2 * per)
        block = SymbioticBlock(spec, EntityArrays.fresh(np.arange(i * per, (i + 1) * per), 1))
        for cycle in range(1, cycles + 1):
            result = block.run(cycle, registry, now=0.0)
        row = AuditRow.from_meta({"spec": spec.to_dict(), "num_entidades": len(block),
                                  "last_result": result.to_dict()})  # fmt: skip
        assert row is not None
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def healthy() -> list[AuditRow]:
    return _population(1000, per=200)


@pytest.mark.parametrize("contamination", ["auto", 0.05])
@pytest.mark.parametrize("n", [50, 1000])
def test_audit_is_quiet_on_a_healthy_population(
    healthy: list[AuditRow], contamination: Any, n: int
) -> None:
    assert find_anomalies(healthy[:n], contamination=contamination) == []


@pytest.mark.parametrize("contamination", ["auto", 0.05])
@pytest.mark.parametrize("n", [50, 1000])
def test_audit_flags_an_injected_block(healthy: list[AuditRow], contamination: Any, n: int) -> None:
    rows = list(healthy[:n])
    rows[17] = dataclasses.replace(rows[17], error_rate=0.7, fitness=0.1)
    found = find_anomalies(rows, contamination=contamination)
    assert [a.block_id for a in found] == [rows[17].block_id]
    assert found[0].reason.startswith("fitness 0.100 vs median 0.8")
    assert "error rate 0.700 vs median 0.0" in found[0].reason
    assert 0.5 < found[0].score <= 1.0


def test_audit_is_deterministic(healthy: list[AuditRow]) -> None:
    rows = list(healthy[:100])
    rows[3] = dataclasses.replace(rows[3], mean=0.95)
    assert find_anomalies(rows) == find_anomalies(rows)
    assert [a.block_id for a in find_anomalies(rows)] == [rows[3].block_id]


def test_audit_needs_enough_peers(healthy: list[AuditRow]) -> None:
    rows = [dataclasses.replace(r, error_rate=0.9 if i == 0 else r.error_rate)
            for i, r in enumerate(healthy[:7])]  # fmt: skip
    assert find_anomalies(rows) == []
    assert find_anomalies(rows, min_blocks=5) != []


def test_audit_compares_blocks_with_their_peers(healthy: list[AuditRow]) -> None:
    # One security block, whose values look nothing like a sensor's, is not an anomaly.
    odd = dataclasses.replace(healthy[0], block_id="sec", peer="security_node", mean=0.01)
    assert find_anomalies([*healthy[:60], odd]) == []


def test_audit_discounts_runs_of_few_entities(healthy: list[AuditRow]) -> None:
    # 1 error in 2 selected (rate 0.5, fitness near 0.5) is noise, not evidence.
    tiny = dataclasses.replace(healthy[5], selected=2, error_rate=0.5, fitness=0.45)
    assert find_anomalies([*healthy[:60], tiny]) == []
    sure = dataclasses.replace(tiny, selected=200)
    assert [a.block_id for a in find_anomalies([*healthy[:60], sure])] == [sure.block_id]


def test_audit_rows_need_a_last_result() -> None:
    assert AuditRow.from_meta(meta("a", 0.9, 10)) is None
    with pytest.raises(CorecError, match="contamination"):
        find_anomalies([], contamination=0.9)
