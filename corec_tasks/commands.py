"""``corec_commands`` -> the enabled plugins' command handlers -> ``corec_responses``.

A plugin declares ``"commands": {"NAME": "module:callable"}`` in its plugin.json; a
command ``{"id", "command", "target"?, "args"?}`` on ``corec_commands`` is answered on
``corec_responses`` with ``{"id", "response"}`` or ``{"id", "error"}``. Beat drives it
(``corec.plugins.consume``) only when an enabled plugin declares a command.
"""

from __future__ import annotations

from typing import Any

from corec_tasks.discovery import PluginSpec, enabled, resolve
from corec_tasks.settings import Settings
from corec_tasks.streams.names import COMMANDS, RESPONSES

#: The consumer group reading ``corec_commands`` for the plugins' handlers.
GROUP = "corec_plugin_commands"


def beat_entry(specs: list[PluginSpec], every_s: float) -> dict[str, dict[str, Any]]:
    """The beat entry dispatching commands, when an enabled plugin has a handler."""
    if not any(spec.manifest.commands for spec in specs):
        return {}
    return {"plugin-commands": {
        "task": "corec.plugins.consume", "schedule": every_s,
        "kwargs": {"plugin": "corec", "stream": COMMANDS, "group": GROUP,
                   "handler": "corec_tasks.commands:dispatch"},
        "options": {"expires": max(10.0, 4 * every_s)},
    }}  # fmt: skip


def dispatch(settings: Settings, payload: dict[str, Any]) -> None:
    """Run the handler of ``payload["command"]`` and publish its answer."""
    from corec_tasks.streams.bus import StreamBus

    command, target = payload["command"], payload.get("target")
    handlers = [(spec.name, spec.manifest.commands[command]) for spec in enabled(settings)
                if command in spec.manifest.commands and target in (None, spec.name)]
    answer: dict[str, Any] = {"id": payload["id"]}
    if not handlers:
        answer["error"] = f"no enabled plugin handles {command!r}" + (
            f" as {target!r}" if target else "")
    else:
        name, ref = handlers[0]
        try:
            answer["response"] = resolve(ref, name)(settings, payload.get("args") or {})
        except Exception as exc:  # plugin code: the answer says why, the worker lives
            answer["error"] = f"plugin {name}: {exc!r}"[:1000]
    with StreamBus(settings) as bus:
        bus.publish(RESPONSES, answer)
