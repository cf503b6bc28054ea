"""The framework's stream names, as seed 004 spells them (unprefixed; ``Settings.key``
adds the prefix). A plugin's channels are the plugin's: it names them in its manifest
(``channels``, ``schemas``, ``persisted``); the trading ones are in
``plugins/trading/channels.py``."""

from __future__ import annotations

#: Incoming commands for plugins (seed 004, "Comunicación").
COMMANDS = "corec_commands"
#: Plugins' answers to commands, correlated by the command's ``id``.
RESPONSES = "corec_responses"
#: Alerts from the nucleus, blocks and the audit module.
ALERTS = "corec_alerts"
#: Per-block cycle results from the block engine; they land in ``bloques``, not ``eventos``.
BLOCK_RESULTS = "block_results"
#: Messages that failed validation or delivery, with the reason and the original payload.
DEAD_LETTER = "corec_dead_letter"

#: Every stream the framework itself knows by name.
ALL: tuple[str, ...] = (
    COMMANDS,
    RESPONSES,
    ALERTS,
    BLOCK_RESULTS,
    DEAD_LETTER,
)

#: The streams the persister moves into ``eventos`` by default. The dead letter stays
#: in Redis for an operator to inspect; block results have their own table.
PERSISTED: tuple[str, ...] = tuple(s for s in ALL if s not in (DEAD_LETTER, BLOCK_RESULTS))
