"""Stream names, as the seeds spell them (unprefixed; ``Settings.key`` adds the prefix)."""

from __future__ import annotations

#: Incoming commands for plugins (seed 004, "Comunicación").
COMMANDS = "corec_commands"
#: Plugins' answers to commands, correlated by the command's ``id``.
RESPONSES = "corec_responses"
#: Alerts from the nucleus, blocks and the audit module.
ALERTS = "corec_alerts"
#: Plugin channels of seed 000 (capital_pool and its neighbours).
MARKET_DATA = "market_data"
MACRO_DATA = "macro_data"
CAPITAL_DATA = "capital_data"
TRADING_RESULTS = "trading_results"
#: Per-symbol return forecasts of predictor_temporal (plugins/feeds).
PREDICTIONS = "predictions"
#: Per-block cycle results from the block engine; they land in ``bloques``, not ``eventos``.
BLOCK_RESULTS = "block_results"
#: Messages that failed validation or delivery, with the reason and the original payload.
DEAD_LETTER = "corec_dead_letter"

#: Every stream CoreC knows by name.
ALL: tuple[str, ...] = (
    COMMANDS,
    RESPONSES,
    ALERTS,
    MARKET_DATA,
    MACRO_DATA,
    CAPITAL_DATA,
    TRADING_RESULTS,
    PREDICTIONS,
    BLOCK_RESULTS,
    DEAD_LETTER,
)

#: The streams the persister moves into ``eventos`` by default. The dead letter stays
#: in Redis for an operator to inspect; block results have their own table.
PERSISTED: tuple[str, ...] = tuple(s for s in ALL if s not in (DEAD_LETTER, BLOCK_RESULTS))
