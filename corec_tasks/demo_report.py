"""The demo's closing report: a table of the trading cycles and a PNG chart.

The chart is drawn with matplotlib's object API on an Agg canvas (no pyplot, no
display, no global backend switch), so it works on a headless CI machine and
leaves no state behind in the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from corec_tasks.folders import ensure_dir

#: A point of a series: (cycle number, value).
Point = tuple[int, float]


@dataclass(frozen=True)
class TradingRow:
    """One trading cycle of the demo, after the pool applied its fills."""

    cycle: int
    opened: int
    closed: int
    idle: int
    profit: str
    nav: str
    equity: str
    wall_s: float
    #: ``"SYMBOL: error"`` for each asset the cycle could not process.
    errors: tuple[str, ...] = ()


def trading_table(rows: Sequence[TradingRow], start_nav: str, start_equity: str) -> Table:
    """Per trading cycle: actions, realised profit, then the pool's NAV and equity."""
    out = Table(title="trading cycles (NAV and equity after the pool applied the fills)",
                title_justify="left")  # fmt: skip
    for col in ("cycle", "open", "close", "none", "profit", "NAV", "equity", "wall s"):
        out.add_column(col, justify="left" if col == "cycle" else "right", no_wrap=True)
    out.add_row("start", "", "", "", "", start_nav, start_equity, "")
    for r in rows:
        out.add_row(str(r.cycle), str(r.opened), str(r.closed), str(r.idle), r.profit, r.nav,
                    r.equity, f"{r.wall_s:.2f}")  # fmt: skip
    return out


def write_chart(path: Path, nav: Sequence[Point], fitness: Sequence[Point]) -> Path:
    """Two panels, NAV per unit over the trading cycles and mean block fitness over the
    block cycles, written as a PNG to ``path`` (parent folders created)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    # NAV holds between cycles (it moves when the pool applies a cycle's closes): steps.
    panels = (
        (left, nav, "Capital pool: NAV per unit", "trading cycle (0 = before the first)",
         "NAV per unit", "tab:blue", "steps-post"),
        (right, fitness, "Block engine: mean fitness", "block cycle", "mean fitness (0..1)",
         "tab:green", "default"),
    )  # fmt: skip
    for ax, points, title, xlabel, ylabel, color, style in panels:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", color=color, drawstyle=style)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            # NAV moves by fractions of a cent: plain numbers, not an offset like "+1.05".
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("CoreC demo")
    ensure_dir(path.parent)
    fig.savefig(path, format="png")
    return path
