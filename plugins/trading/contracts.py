"""The plugin contracts live in the framework (``corec_tasks.contracts``); this module
re-exports them for plugins written against ``plugins.trading.contracts``."""

from corec_tasks.contracts import (
    AAA_CONTRACT_VERSION,
    BROKER_CONTRACT_VERSION,
    CONTRACT_VERSION,
    CONTRACTS,
    CORE_CONTRACT_VERSION,
    PIPELINE_CONTRACT_VERSION,
    PORTFOLIO_CONTRACT_VERSION,
    STRATEGY_CONTRACT_VERSION,
    AAAContract,
    BrokerContract,
    CoreContract,
    PipelineContract,
    PortfolioContract,
    StrategyContract,
    check_contract,
    contract_for,
    contract_problems,
)

__all__ = [
    "AAA_CONTRACT_VERSION",
    "BROKER_CONTRACT_VERSION",
    "CONTRACTS",
    "CONTRACT_VERSION",
    "CORE_CONTRACT_VERSION",
    "PIPELINE_CONTRACT_VERSION",
    "PORTFOLIO_CONTRACT_VERSION",
    "STRATEGY_CONTRACT_VERSION",
    "AAAContract",
    "BrokerContract",
    "CoreContract",
    "PipelineContract",
    "PortfolioContract",
    "StrategyContract",
    "check_contract",
    "contract_for",
    "contract_problems",
]
