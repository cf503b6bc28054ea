"""Symbiotic blocks: sharding, selection, run, fitness, self-repair, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.entities import WIRE_DTYPE, EntityArrays
from corec_tasks.blocks.model import (
    BlockSpec,
    SymbioticBlock,
    fitness_of,
    selection_size,
    specs_from_config,
)
from corec_tasks.blocks.processors import (
    Payload,
    ProcessorContext,
    ProcessorNotFound,
    ProcessorRegistry,
)
from corec_tasks.config import BlockConfig, load_config

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_sample_config.json"


def make_block(
    n: int = 100, processor: str = "sensor_swarm", carga: float = 1.0, **kw: Any
) -> SymbioticBlock:
    spec = BlockSpec("b", "g", 1, processor, carga=carga, **kw)
    return SymbioticBlock(spec, EntityArrays.fresh(np.arange(1000, 1000 + n), 1))


def registry_with(name: str, fn: Any, **kw: Any) -> ProcessorRegistry:
    reg = default_registry()
    reg.register(name, fn, **kw)
    return reg


def fixed(values: list[float], errors: list[bool] | None = None) -> Any:
    """A processor returning ``values`` (tiled) and ``errors``."""

    def fn(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        n = len(ctx)
        v = np.resize(np.array(values, np.float32), n)
        e = np.resize(np.array(errors or [False], bool), n)
        return v, e

    return fn


# -- sharding ---------------------------------------------------------------------------


def test_specs_from_seed_sample() -> None:
    cfg = load_config(SEED, check_plugin_paths=False)
    specs = specs_from_config(cfg.all_blocks())
    assert len(specs) == 980 + 1 + 10 + 1 == 992
    ids = np.concatenate([ids for _, ids in specs])
    assert ids.dtype == np.uint32 and len(ids) == 1_002_000
    assert np.array_equal(np.sort(ids), np.arange(1_002_000))  # each id exactly once
    by_id = {spec.id: (spec, len(i)) for spec, i in specs}
    assert len(by_id) == 992
    sensor, n = by_id["enjambre_sensor-0979"]
    assert (n, sensor.group, sensor.processor, sensor.max_entities) == (
        1000, "enjambre_sensor", "sensor_swarm", 2000,
    )  # fmt: skip
    assert by_id["nodo_seguridad"][0].processor == "security_node"  # one shard keeps its id
    assert by_id["nodo_seguridad"][0].max_errores == 0.02
    ia, n = by_id["ia_analisis-0009"]
    assert (n, ia.processor, ia.max_entities) == (2000, "isolation_forest", 4000)
    assert by_id["example_block"][0].processor == "example"
    assert by_id["example_block"][0].min_fitness == 0.5


def test_specs_uneven_shards_and_id_start() -> None:
    blocks = [BlockConfig(id="a", canal=1, entidades=2500, entidades_por_bloque=1000)]
    specs = specs_from_config(blocks, id_start=10)
    assert [s.id for s, _ in specs] == ["a-0000", "a-0001", "a-0002"]
    assert [(int(i[0]), len(i)) for _, i in specs] == [(10, 1000), (1010, 1000), (2010, 500)]


def test_spec_dict_roundtrip() -> None:
    spec = make_block().spec
    assert BlockSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# -- selection --------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 300), carga=st.floats(0.0, 1.0))
def test_selection_size_and_rotation_covers_all(n: int, carga: float) -> None:
    block = make_block(n, carga=carga)
    k = selection_size(n, carga)
    assert k == max(1, math.ceil(n * carga - 1e-9))  # the seed formula, float noise forgiven
    seen: set[int] = set()
    for cycle in range(math.ceil(n / k)):
        idx = block.select(cycle)
        assert len(idx) == k and len(set(idx.tolist())) == k
        seen.update(idx.tolist())
    assert seen == set(range(n))
    assert np.array_equal(block.select(3), block.select(3))


def test_selection_size_forgives_float_noise() -> None:
    assert 100 * 0.07 > 7 and selection_size(100, 0.07) == 7
    assert [selection_size(10, c) for c in (0.0, 0.01, 0.1, 0.11, 1.0)] == [1, 1, 1, 2, 10]
    assert selection_size(0, 0.5) == 0


def test_selection_of_an_empty_block() -> None:
    block = make_block(0)
    assert len(block.select(4)) == 0
    result = block.run(4, default_registry(), now=0.0)
    assert (result.selected, result.errors, result.fitness) == (0, 0, 0.0)


# -- fitness ----------------------------------------------------------------------------


def test_fitness_formula() -> None:
    assert fitness_of(0.0, 0.0) == 1.0
    assert fitness_of(1.0, 0.0) == 0.0
    assert fitness_of(0.1, 0.0) == pytest.approx(0.9)
    assert fitness_of(0.0, 0.5) == 0.0
    assert fitness_of(0.5, 0.1) == pytest.approx(0.5 * 0.8)


def test_run_fitness_edge_cases() -> None:
    block = make_block(100)
    all_errors = registry_with("bad", fixed([0.5], [True]))
    block.spec = BlockSpec("b", "g", 1, "bad")
    r = block.run(1, all_errors, now=0.0)
    assert (r.errors, r.fitness, r.mean, r.std) == (100, 0.0, 0.0, 0.0)

    # Constant values with 10% errors: sigma 0, fitness 1 - e.
    reg = registry_with("const", fixed([0.3], [True] + [False] * 9))
    block = make_block(100, "const")
    r = block.run(1, reg, now=0.0)
    assert r.errors == 10 and r.fitness == pytest.approx(0.9)
    assert r.mean == pytest.approx(0.3) and r.std == pytest.approx(0.0, abs=1e-7)

    # Values 0 and 1 in equal parts: sigma 0.5, fitness 0.
    r = make_block(10, "spread").run(1, registry_with("spread", fixed([0.0, 1.0])), now=0.0)
    assert r.std == pytest.approx(0.5) and r.fitness == 0.0


def test_out_of_range_and_nan_values_are_errors() -> None:
    reg = registry_with("odd", fixed([0.5, 1.5, -0.1, float("nan"), float("inf")]))
    block = make_block(5, "odd")
    r = block.run(0, reg, now=0.0)
    assert r.errors == 4
    # Unhealthy (80% errors): every failed entity was replaced at once.
    assert r.repaired == 4 and block.entities.active.all()
    assert block.entities.value.tolist() == [0.5, 0.0, 0.0, 0.0, 0.0]


# -- update and self-repair -------------------------------------------------------------


def test_update_rules_and_repair_threshold_when_healthy() -> None:
    # 1 error in 100 (within max_errores 0.05), fitness 1 - 0.01: healthy.
    reg = registry_with("one_bad", fixed([0.4], [True] + [False] * 99))
    block = make_block(100, "one_bad")
    ent = block.entities
    ent.active[50:53] = False
    ent.failures[50:53] = [1, 2, 255]
    ent.value[50:53] = 0.9
    block.spec = BlockSpec("b", "g", 1, "one_bad", carga=0.4)  # selects 0..39 in cycle 0
    r = block.run(0, reg, now=0.0)
    assert (r.selected, r.errors) == (40, 1)
    assert (ent.active[0], ent.failures[0], ent.value[0]) == (False, 1, 0.0)  # failed, kept
    assert ent.active[1:40].all() and not ent.failures[1:40].any()
    assert np.all(ent.value[1:40] == np.float32(0.4))
    # failures >= 2 replaced in place, ids kept; failures 1 left alone.
    assert r.repaired == 2
    assert ent.failures[50:53].tolist() == [1, 0, 0] and ent.active[50:53].tolist() == [
        False, True, True,
    ]  # fmt: skip
    assert ent.value[50:53].tolist() == pytest.approx([0.9, 0.0, 0.0])
    assert np.array_equal(ent.ids, np.arange(1000, 1100))
    # The same entity failing again reaches 2 and is replaced.
    block.spec = BlockSpec("b", "g", 1, "one_bad", carga=0.4)
    r = block.run(0, reg, now=0.0)
    assert r.repaired == 1 and ent.active[0] and ent.failures[0] == 0


def test_unhealthy_block_replaces_every_inactive_entity() -> None:
    reg = registry_with("low", fixed([0.0, 1.0]))  # no errors but fitness 0 < min_fitness
    block = make_block(100, "low", carga=0.1)
    block.entities.active[50:60] = False
    block.entities.failures[50:60] = 1
    r = block.run(0, reg, now=0.0)
    assert r.fitness == 0.0 and r.repaired == 10
    assert block.entities.active.all() and not block.entities.failures.any()


def test_processor_failures_never_raise() -> None:
    def boom(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("kaput")

    def short(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(1, np.float32), np.zeros(1, bool)

    for name, fn, words in [("boom", boom, "kaput"), ("short", short, "shapes")]:
        block = make_block(20, name)
        r = block.run(0, registry_with(name, fn), now=0.0)
        assert r.errors == 20 and r.fitness == 0.0
        assert r.processor_error is not None and words in r.processor_error
    with pytest.raises(ProcessorNotFound):
        make_block(5, "missing").run(0, default_registry())


def test_payload_processor_without_payload_errors() -> None:
    calls: list[int] = []

    def needs(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(ctx))
        return np.full(len(ctx), 0.5, np.float32), np.zeros(len(ctx), bool)

    reg = registry_with("needs", needs, needs_payload=True)
    assert make_block(10, "needs").run(0, reg, now=0.0).errors == 10 and not calls
    payloads: list[Payload] = [{"valor": 1.0}]
    assert make_block(10, "needs").run(0, reg, payloads, now=0.0).errors == 0
    assert calls == [10]


def test_async_processor_block() -> None:
    block = make_block(50, "async_echo")
    r = block.run(0, default_registry(), now=0.0)
    assert r.errors == 0 and 0 < r.mean < 1
    r = block.run(1, default_registry(), [{"valor": 0.5}], now=0.0)
    assert r.errors == 0 and r.mean == pytest.approx(0.5) and r.fitness == pytest.approx(1.0)


# -- results, determinism, conservation -------------------------------------------------


def test_messages_are_zstd_wire_records_of_the_selected_before_repair() -> None:
    reg = registry_with("some_bad", fixed([0.5], [True] + [False] * 9))
    block = make_block(100, "some_bad", carga=0.25)
    r = block.run(3, reg, now=123.0)
    records = np.frombuffer(zstandard.ZstdDecompressor().decompress(r.messages), WIRE_DTYPE)
    sel = block.select(3)
    assert np.array_equal(records["id"], block.entities.ids[sel])
    assert np.array_equal(records["canal"], np.ones(25))
    # 3 of 25 failed (unhealthy, so repaired at once); the messages still show the failures.
    assert records["activo"].tolist() == [i % 10 != 0 for i in range(25)]
    assert r.repaired == 3 and block.entities.active.all()
    out = r.to_dict()
    assert "messages" not in out and out["timestamp"] == 123.0 and out["block_id"] == "b"
    assert json.loads(json.dumps(out)) == out


@pytest.mark.parametrize("processor", ["sensor_swarm", "security_node", "isolation_forest"])
def test_same_state_and_cycle_give_identical_results(processor: str) -> None:
    reg = default_registry()
    block = make_block(300, processor, carga=0.5)
    for cycle in range(3):
        block.run(cycle, reg)
    saved = block.to_state()
    runs = []
    for _ in range(2):
        twin = SymbioticBlock.from_state(block.spec, saved)
        result = twin.run(7, reg, now=1.0)
        runs.append((result, twin.to_state()))
    (r1, s1), (r2, s2) = runs
    assert r1 == r2 and r1.messages == r2.messages and s1 == s2


def test_block_state_roundtrip() -> None:
    block = make_block(50)
    block.run(0, default_registry())
    back = SymbioticBlock.from_state(block.spec, block.to_state())
    assert back.fitness == block.fitness and back.entities.equals(block.entities)


def test_ids_and_count_never_change_through_runs() -> None:
    rng = np.random.default_rng(0)

    def chaos(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        n = len(ctx)
        return rng.random(n).astype(np.float32) * 1.2, rng.random(n) < 0.3

    reg = registry_with("chaos", chaos)
    block = make_block(200, "chaos", carga=0.3)
    before = block.entities.ids.copy()
    repaired = 0
    for cycle in range(50):
        r = block.run(cycle, reg, now=0.0)
        repaired += r.repaired
        assert r.num_entidades == 200
        assert np.array_equal(block.entities.ids, before)
    assert repaired > 0
