"""``corec portfolio allocate``: what-if weights and amounts for a covariance.

Input errors (a missing or unreadable file, bad JSON, a matrix that is not a
covariance, bad budgets, a capital that is not a positive amount) are usage
errors, exit status 2, naming the option. A valid input with no solution (risk
parity on a degenerate covariance) is an error, exit status 1.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

import click

from corec_tasks.cli.output import console, handle_errors, print_json, table

METHODS = ("equal_weight", "risk_parity")


class DecimalAmount(click.ParamType):  # type: ignore[type-arg]
    """A positive, finite amount of money, parsed as ``Decimal`` (never float)."""

    name = "amount"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"{value!r} is not a decimal amount (e.g. 10000 or 2500.50).", param, ctx)
        if not amount.is_finite() or amount <= 0:
            self.fail(f"{value!r} is not a positive amount.", param, ctx)
        return amount


def _read_json(path: Path, option: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=option) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise click.BadParameter(f"{path} is not valid JSON: {exc}", param_hint=option) from None


def load_covariance(path: Path) -> tuple[list[str], Any]:
    """Asset names and the validated matrix, from a bare matrix or ``{"assets", "cov"}``."""
    from plugins.portfolio.allocation import AllocationError, validate_covariance

    data = _read_json(path, "--cov")
    names: list[str] | None = None
    if isinstance(data, dict):
        if "cov" not in data:
            raise click.BadParameter(
                f"{path} must hold a matrix, or an object with a \"cov\" matrix "
                "(and optionally \"assets\").", param_hint="--cov",
            )  # fmt: skip
        raw_names = data.get("assets")
        if raw_names is not None and (
            not isinstance(raw_names, list) or not all(isinstance(a, str) for a in raw_names)
        ):
            raise click.BadParameter(f"{path}: \"assets\" must be a list of names.",
                                     param_hint="--cov")  # fmt: skip
        names, data = raw_names, data["cov"]
    try:
        cov = validate_covariance(data)
    except AllocationError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--cov") from None
    n = cov.shape[0]
    if names is None:
        names = [str(i) for i in range(n)]
    elif len(names) != n:
        raise click.BadParameter(
            f"{path} names {len(names)} assets but its covariance is {n}x{n}.", param_hint="--cov"
        )
    elif len(set(names)) != n:
        raise click.BadParameter(f"{path}: asset names must be unique.", param_hint="--cov")
    return names, cov


def load_budgets(path: Path, names: list[str]) -> Any:
    """Risk budgets, from a list (asset order) or an object keyed by asset name."""
    from plugins.portfolio.allocation import AllocationError, validate_budgets

    data = _read_json(path, "--budgets")
    if isinstance(data, dict):
        if set(data) != set(names):
            missing = sorted(set(names) - set(data))
            extra = sorted(set(data) - set(names))
            raise click.BadParameter(
                f"{path}: budgets must name exactly the covariance's assets "
                f"(missing {missing}, unknown {extra}).", param_hint="--budgets",
            )  # fmt: skip
        data = [data[name] for name in names]
    try:
        return validate_budgets(data, len(names))
    except AllocationError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--budgets") from None


@click.group()
def portfolio() -> None:
    """Portfolio allocation: weights and amounts for a what-if covariance."""


@portfolio.command()
@click.option("--method", type=click.Choice(METHODS), default="risk_parity", show_default=True,
              help="equal_weight (1/n) or risk_parity (equal risk contribution).")
@click.option("--cov", "cov_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='Covariance JSON: [[...], ...] or {"assets": [...], "cov": [[...], ...]}.')
@click.option("--budgets", "budgets_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Risk budgets JSON (risk_parity): a list, or {asset: budget}; sum 1.")
@click.option("--capital", type=DecimalAmount(),
              help="Capital to split; amounts are rounded down to cents.")
@click.option("--max-per-asset", type=click.FloatRange(0, 1, min_open=True),
              help="Cap per asset (fraction, e.g. 0.4); the excess goes pro rata to the rest.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def allocate(method: str, cov_path: Path, budgets_path: Path | None, capital: Decimal | None,
             max_per_asset: float | None, as_json: bool) -> None:  # fmt: skip
    """Weights (and amounts, with --capital) for a covariance, without touching anything."""
    import numpy as np

    from plugins.portfolio.allocation import (
        allocate_capital,
        cap_weights,
        equal_weight,
        risk_parity,
    )

    names, cov = load_covariance(cov_path)
    budgets = None
    if budgets_path is not None:
        if method != "risk_parity":
            raise click.UsageError("--budgets only applies to --method risk_parity.")
        budgets = load_budgets(budgets_path, names)
    weights = equal_weight(len(names)) if method == "equal_weight" else risk_parity(cov, budgets)
    if max_per_asset is not None:
        weights = cap_weights(weights, max_per_asset)
    variance = float(weights @ cov @ weights)
    # Risk contributions as shares of the portfolio's variance; a capped-away
    # leftover is cash, which carries no risk.
    rc = weights * (cov @ weights) / variance if variance > 0 else np.full(len(names), np.nan)
    amounts = allocate_capital(capital, weights) if capital is not None else None

    rows: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        row: dict[str, Any] = {"asset": name, "weight": float(weights[i]),
                               "risk_contribution": None if np.isnan(rc[i]) else float(rc[i])}
        if method == "risk_parity":
            row["budget"] = float(budgets[i]) if budgets is not None else 1.0 / len(names)
        if amounts is not None:
            row["amount"] = f"{amounts[i]:f}"
        rows.append(row)
    out: dict[str, Any] = {
        "method": method,
        "max_per_asset": max_per_asset,
        "portfolio_volatility": float(np.sqrt(max(variance, 0.0))),
        "weights_total": float(weights.sum()),
        "assets": rows,
    }
    if capital is not None and amounts is not None:
        with localcontext() as ctx:
            ctx.prec = max(ctx.prec, len(f"{capital:f}") + 4)  # exact sums for any capital
            allocated = sum(amounts, Decimal(0))
            out.update(capital=f"{capital:f}", allocated=f"{allocated:f}",
                       unallocated=f"{capital - allocated:f}")  # fmt: skip
    if as_json:
        print_json(out)
        return
    _print_table(out)


def _print_table(out: dict[str, Any]) -> None:
    columns = ["asset", "weight", "risk contribution"]
    keys = ["weight", "risk_contribution"]
    if out["method"] == "risk_parity":
        columns.append("budget")
        keys.append("budget")
    if "capital" in out:
        columns.append("amount")
        keys.append("amount")

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.6f}" if isinstance(value, float) else str(value)

    rows = [[r["asset"], *(cell(r[k]) for k in keys)] for r in out["assets"]]
    title = out["method"]
    if out["max_per_asset"]:
        title += f", cap {out['max_per_asset']:g} per asset"
    console.print(table(title, columns, rows))
    console.print(f"weights total {out['weights_total']:.6f}, "
                  f"portfolio volatility {out['portfolio_volatility']:.6g}",
                  highlight=False, soft_wrap=True)  # fmt: skip
    if "capital" in out:
        money = (f"capital {out['capital']}, allocated {out['allocated']}, "
                 f"unallocated {out['unallocated']}")  # fmt: skip
        console.print(money, highlight=False, soft_wrap=True)
