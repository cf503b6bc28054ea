"""``corec portfolio allocate`` as an operator types it (click's CliRunner, no service)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from corec_tasks.cli import main

REF_COV = [[1.0, 0.0015, -0.0119], [0.0015, 1.0, -0.0308], [-0.0119, -0.0308, 1.0]]
REF_BUDGETS = [0.1594, 0.0126, 0.8280]
REF_WEIGHTS = [0.27986, 0.08775, 0.63239]
ASSETS = ["BTC", "ETH", "GOLD"]


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["portfolio", "allocate", *args])


@pytest.fixture
def cov(tmp_path: Path) -> str:
    return write(tmp_path, "cov.json", {"assets": ASSETS, "cov": REF_COV})


@pytest.fixture
def budgets(tmp_path: Path) -> str:
    return write(tmp_path, "budgets.json", REF_BUDGETS)


def test_registered_under_corec() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "portfolio" in result.output
    result = CliRunner().invoke(main, ["portfolio", "allocate", "--help"])
    assert result.exit_code == 0 and "--max-per-asset" in result.output


def test_json_risk_parity_with_capital(cov: str, budgets: str) -> None:
    result = run("--cov", cov, "--budgets", budgets, "--capital", "10000", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["method"] == "risk_parity"
    assert [a["asset"] for a in out["assets"]] == ASSETS
    assert [round(a["weight"], 5) for a in out["assets"]] == REF_WEIGHTS
    assert [round(a["risk_contribution"], 9) for a in out["assets"]] == REF_BUDGETS
    assert [a["budget"] for a in out["assets"]] == REF_BUDGETS
    amounts = [a["amount"] for a in out["assets"]]
    assert amounts == ["2798.62", "877.49", "6323.88"]  # strings: money is never float
    assert out["capital"] == "10000"
    assert out["allocated"] == "9999.99" and out["unallocated"] == "0.01"
    assert sum(Decimal(a) for a in amounts) == Decimal(out["allocated"])


def test_json_bare_matrix_equal_weight_capped(tmp_path: Path) -> None:
    cov = write(tmp_path, "cov.json", REF_COV)
    result = run("--method", "equal_weight", "--cov", cov, "--capital", "1e4",
                 "--max-per-asset", "0.3", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [a["asset"] for a in out["assets"]] == ["0", "1", "2"]
    assert [a["weight"] for a in out["assets"]] == [0.3, 0.3, 0.3]
    assert "budget" not in out["assets"][0]
    assert [a["amount"] for a in out["assets"]] == ["3000.00"] * 3
    assert out["capital"] == "10000"  # 1e4 printed as an amount, not 1E+4
    assert out["unallocated"] == "1000.00"
    assert out["max_per_asset"] == 0.3


def test_json_without_capital_has_no_amounts(cov: str) -> None:
    result = run("--cov", cov, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert "capital" not in out and "amount" not in out["assets"][0]
    rcs = [a["risk_contribution"] for a in out["assets"]]
    assert max(rcs) - min(rcs) < 1e-9  # default budgets: equal risk


def test_budgets_keyed_by_asset_name(tmp_path: Path, cov: str) -> None:
    named = write(tmp_path, "b.json", dict(zip(reversed(ASSETS), reversed(REF_BUDGETS),
                                               strict=True)))  # fmt: skip
    out = json.loads(run("--cov", cov, "--budgets", named, "--json").output)
    assert [round(a["weight"], 5) for a in out["assets"]] == REF_WEIGHTS


def test_table_output(cov: str, budgets: str) -> None:
    result = run("--cov", cov, "--budgets", budgets, "--capital", "10000")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("risk_parity")
    for name, weight, amount in zip(ASSETS, ("0.279863", "0.087749", "0.632388"),
                                    ("2798.62", "877.49", "6323.88"), strict=True):  # fmt: skip
        line = next(line for line in text.splitlines() if f" {name} " in line)
        assert weight in line and amount in line
    assert "capital 10000, allocated 9999.99, unallocated 0.01" in text


def test_table_output_capped_without_capital(cov: str) -> None:
    result = run("--method", "equal_weight", "--cov", cov, "--max-per-asset", "0.5")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("equal_weight, cap 0.5 per asset")
    assert "0.333333" in result.output and "amount" not in result.output


# -- errors -------------------------------------------------------------------------------


def assert_usage_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_missing_file(tmp_path: Path) -> None:
    assert_usage_error(run("--cov", str(tmp_path / "nope.json")), "--cov", "does not exist")
    assert_usage_error(run(), "Missing option '--cov'")


def test_bad_json(tmp_path: Path) -> None:
    assert_usage_error(run("--cov", write(tmp_path, "c.json", "[[1, 0], [0, 1]")),
                       "--cov", "not valid JSON")  # fmt: skip


@pytest.mark.parametrize(("data", "fragment"), [
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "square matrix"),
    ([1.0, 2.0], "square matrix"),
    ("\"cov\"", "a matrix"),
    ([[1.0, 0.5], [0.1, 1.0]], "not symmetric"),
    ([[1.0, 2.0], [2.0, 1.0]], "not positive semidefinite"),
    ([[1.0, "x"], ["x", 1.0]], "matrix"),
    ({"assets": ["A"], "matrix": [[1.0]]}, "\"cov\" matrix"),
    ({"assets": ["A", "B"], "cov": [[1.0]]}, "names 2 assets"),
    ({"assets": ["A", "A"], "cov": [[1.0, 0.0], [0.0, 1.0]]}, "unique"),
    ({"assets": "AB", "cov": [[1.0, 0.0], [0.0, 1.0]]}, "list of names"),
])  # fmt: skip
def test_bad_covariance(tmp_path: Path, data: Any, fragment: str) -> None:
    assert_usage_error(run("--cov", write(tmp_path, "c.json", data)), "--cov", fragment)


@pytest.mark.parametrize(("data", "fragment"), [
    ([0.5, 0.5], "2 risk budgets for 3 assets"),
    ([0.5, 0.6, -0.1], "positive"),
    ([0.3, 0.3, 0.3], "sum to 1"),
    ({"BTC": 0.5, "ETH": 0.5}, "missing ['GOLD']"),
    ({"BTC": 0.2, "ETH": 0.2, "GOLD": 0.3, "OIL": 0.3}, "unknown ['OIL']"),
    ("{", "not valid JSON"),
])  # fmt: skip
def test_bad_budgets(tmp_path: Path, cov: str, data: Any, fragment: str) -> None:
    result = run("--cov", cov, "--budgets", write(tmp_path, "b.json", data))
    assert_usage_error(result, "--budgets", fragment)


def test_budgets_need_risk_parity(cov: str, budgets: str) -> None:
    result = run("--method", "equal_weight", "--cov", cov, "--budgets", budgets)
    assert_usage_error(result, "--budgets only applies to --method risk_parity")


@pytest.mark.parametrize(("capital", "fragment"), [
    ("abc", "not a decimal amount"),
    ("-5", "not a positive amount"),
    ("0", "not a positive amount"),
    ("NaN", "not a positive amount"),
    ("Infinity", "not a positive amount"),
])  # fmt: skip
def test_bad_capital(cov: str, capital: str, fragment: str) -> None:
    assert_usage_error(run("--cov", cov, "--capital", capital), "--capital", fragment)


@pytest.mark.parametrize("cap", ["0", "1.5", "x"])
def test_bad_max_per_asset(cov: str, cap: str) -> None:
    assert_usage_error(run("--cov", cov, "--max-per-asset", cap), "--max-per-asset")


def test_bad_method(cov: str) -> None:
    assert_usage_error(run("--method", "kelly", "--cov", cov), "--method")


def test_no_solution_is_an_error_not_a_usage_error(tmp_path: Path) -> None:
    result = run("--cov", write(tmp_path, "c.json", [[1.0, -1.0], [-1.0, 1.0]]))
    assert result.exit_code == 1
    assert "No risk parity portfolio exists" in result.output


def test_equal_weight_on_a_riskless_mix_has_no_risk_contributions(tmp_path: Path) -> None:
    cov = write(tmp_path, "c.json", [[1.0, -1.0], [-1.0, 1.0]])
    out = json.loads(run("--method", "equal_weight", "--cov", cov, "--json").output)
    assert out["portfolio_volatility"] == 0.0
    assert [a["risk_contribution"] for a in out["assets"]] == [None, None]
