"""One exception root for CoreC, with shallow subtrees."""

from __future__ import annotations


class CorecError(Exception):
    """Root of every error CoreC raises on purpose."""


class ConfigurationError(CorecError):
    """A configuration is invalid; ``problems`` holds ``(key path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {key}: {msg}" for key, msg in problems)
        super().__init__(f"invalid {source} ({len(problems)} problem(s)):\n{lines}")


class ServiceError(CorecError):
    """A backing service (Redis, PostgreSQL) is unreachable or failed to start."""


class StorageError(CorecError):
    """PostgreSQL storage failed (migrations, partitions, batch writes)."""


class StreamError(CorecError):
    """The Redis Streams bus failed or was given something it cannot carry."""


class PluginError(CorecError):
    """Plugin code raised; carries the plugin's name."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")
