"""The demo's report (table and PNG chart) and its eager pipeline config, no services."""

from __future__ import annotations

import struct
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from corec_tasks.demo_report import TradingRow, trading_table, write_chart
from corec_tasks.settings import load_settings
from plugins.pipeline.config import DEFAULT_PATH, trading_config
from plugins.pipeline.hooks import DEMO_STRATEGY, write_demo_config

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (which must come first)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_the_chart_is_a_png_of_both_series(tmp_path: Path) -> None:
    nav = [(0, 1.05), (1, 1.05), (2, 1.0500123), (3, 1.0499), (4, 1.0503)]
    fitness = [(1, 0.893), (2, 0.8787), (3, 0.881)]
    out = write_chart(tmp_path / "sub" / "report.png", nav, fitness)
    assert out == tmp_path / "sub" / "report.png"
    width, height = png_size(out)
    assert width >= 800 and height >= 300
    assert out.stat().st_size > 10_000  # two panels drawn, not a blank canvas


def test_the_chart_is_written_with_empty_series(tmp_path: Path) -> None:
    out = write_chart(tmp_path / "empty.png", [], [])
    assert png_size(out)[0] > 0


def test_the_trading_table_has_a_row_per_cycle_and_the_start() -> None:
    rows = [
        TradingRow(1, 1, 0, 1, "0", "1.0500000000", "5250.00", 0.2),
        TradingRow(2, 0, 1, 1, "-4.33", "1.0491340000", "5245.67", 0.1),
    ]
    console = Console(width=100, record=True)
    console.print(trading_table(rows, "1.0500000000", "5250.00"))
    text = console.export_text()
    assert text.count("\n│ ") == 3
    assert "1.0491340000" in text and "-4.33" in text and "start" in text


def test_the_demo_config_makes_only_the_strategy_eager(tmp_path: Path) -> None:
    shipped_text = DEFAULT_PATH.read_text()
    base = load_settings(ROOT / "corec_config.json")
    path = write_demo_config(base, tmp_path / "demo")
    demo = load_settings(path)  # loads: every plugin path resolves from the copy
    eager, shipped = trading_config(demo), trading_config(base)
    for key, value in DEMO_STRATEGY.items():
        assert Decimal(eager.strategy[key]) == Decimal(value)
    assert eager.model_dump(exclude={"strategy"}) == shipped.model_dump(exclude={"strategy"})
    assert [b.id for b in demo.config.all_blocks()] == [b.id for b in base.config.all_blocks()]
    assert DEFAULT_PATH.read_text() == shipped_text  # the shipped defaults are untouched
