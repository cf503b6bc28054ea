"""``BasePlugin``, the root every plugin type's contract derives from, and ``safe_call``,
the one way the framework calls plugin code (an exception becomes a structured error
sent to an audit hook, never a crash).

Configuration precedence, lowest first (seed 003 §8):

1. ``plugin_params``, the plugin's declared defaults;
2. the ``config`` dict given to ``__init__`` (the global configuration of this plugin);
3. the stored layers a ``ConfigLoader`` reads for the portfolio, then for the asset
   (the trading plugins' ``DbConfigLoader`` reads the ``Config`` model).

The merged dict is validated by the plugin's pydantic ``Params`` model; a bad value or
an unknown key raises ``ConfigurationError`` naming the plugin, the key and where the
value came from. Every plugin constructor also takes ``settings`` (the deployment's
typed settings, None in a bare unit test), so the framework builds any plugin the
same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from corec_tasks.errors import ConfigurationError, PluginError

log = logging.getLogger(__name__)

#: One layer of configuration: where it came from (shown in errors) and its options.
ConfigLayer = tuple[str, Mapping[str, Any]]


class ConfigLoader(Protocol):
    """Reads the stored configuration layers of one plugin, lowest precedence first."""

    def __call__(
        self, plugin: str, portfolio_id: int | None, asset_id: int | None
    ) -> Sequence[ConfigLayer]: ...


class BasePlugin:
    """Root of every trading plugin (seed 003): ``plugin_params``, ``plugin_debug_vars``,
    a validated ``params`` model and the merged ``config`` dict."""

    #: The plugin's name in config and errors; defaults to the class name.
    plugin_name: ClassVar[str] = ""
    #: Defaults; when omitted they are taken from ``Params``' field defaults.
    plugin_params: ClassVar[dict[str, Any]] = {}
    #: Options shown by ``debug_info``.
    plugin_debug_vars: ClassVar[list[str]] = []
    #: The contract version the plugin was written for (its type's contract sets it).
    CONTRACT_VERSION: ClassVar[str | None] = None
    #: The pydantic model validating the merged options (``extra="forbid"`` recommended).
    Params: ClassVar[type[BaseModel] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("plugin_name"):
            cls.plugin_name = cls.__name__
        if "plugin_params" not in cls.__dict__ and cls.Params is not None:
            cls.plugin_params = {
                name: field.default
                for name, field in cls.Params.model_fields.items()
                if field.default is not PydanticUndefined
            }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        loader: ConfigLoader | None = None,
        portfolio_id: int | None = None,
        asset_id: int | None = None,
        settings: Any = None,
    ) -> None:
        #: The deployment's settings (None outside one): what a plugin needs to reach
        #: its services (Redis, the database) without globals.
        self.settings = settings
        layers: list[ConfigLayer] = [
            ("plugin_params", self.plugin_params),
            ("config", config or {}),
        ]
        if loader is not None:
            layers.extend(loader(self.plugin_name, portfolio_id, asset_id))
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for source, values in layers:
            if not isinstance(values, Mapping):
                raise ConfigurationError(
                    [(f"plugins.{self.plugin_name}", f"{source} must be a mapping")],
                    f"{self.plugin_name} plugin config",
                )
            for key, value in values.items():
                merged[str(key)] = value
                origin[str(key)] = source
        self.config: dict[str, Any] = merged
        self.params: BaseModel | None = self._validate(merged, origin)

    def _validate(self, merged: dict[str, Any], origin: dict[str, str]) -> BaseModel | None:
        name = self.plugin_name
        if self.Params is None:
            unknown = sorted(set(merged) - set(self.plugin_params))
            if unknown:
                problems = [
                    (f"plugins.{name}.{k}", f"unknown option (from {origin[k]})") for k in unknown
                ]
                raise ConfigurationError(problems, f"{name} plugin config")
            return None
        try:
            return self.Params.model_validate(merged)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = [str(p) for p in err["loc"]]
                where = f" (from {origin[loc[0]]})" if loc and loc[0] in origin else ""
                problems.append((".".join(["plugins", name, *loc]), err["msg"] + where))
            raise ConfigurationError(problems, f"{name} plugin config") from None

    def debug_info(self) -> dict[str, Any]:
        """The seed's debug view: the current values of ``plugin_debug_vars``."""
        source: Any = self.params if self.params is not None else self.config
        if isinstance(source, BaseModel):
            return {k: getattr(source, k, None) for k in self.plugin_debug_vars}
        return {k: source.get(k) for k in self.plugin_debug_vars}


#: Receives every failed plugin call: the structured error dict and the PluginError.
AuditHook = Callable[[dict[str, Any], PluginError], None]


def log_audit(error: dict[str, Any], exc: PluginError) -> None:
    """The default audit hook: one ERROR log line (with the traceback)."""
    log.error(
        "plugin call failed: %s",
        json.dumps(error, sort_keys=True, default=str),
        exc_info=exc.__cause__,
    )


def plugin_label(plugin: Any) -> str:
    """A plugin's name for errors: ``plugin_name``, else its class name."""
    return str(getattr(plugin, "plugin_name", "") or type(plugin).__name__)


def is_error(result: Any) -> bool:
    """True if ``result`` is the error dict of a failed ``safe_call``."""
    return isinstance(result, dict) and result.get("ok") is False and "error" in result


def safe_call(
    plugin: Any, method: str, *args: Any, audit: AuditHook | None = None, **kwargs: Any
) -> Any:
    """``plugin.method(*args, **kwargs)``, never raising: its result, or on any exception
    ``{"ok": False, "plugin", "method", "error", "error_type"}``, sent to ``audit``
    (default: ``log_audit``). A failing audit hook is logged and swallowed too."""
    name = plugin_label(plugin)
    try:
        return getattr(plugin, method)(*args, **kwargs)
    except Exception as exc:
        error: dict[str, Any] = {
            "ok": False,
            "plugin": name,
            "method": method,
            "error": str(exc) or type(exc).__name__,
            "error_type": type(exc).__name__,
        }
        wrapped = PluginError(name, f"{method} failed: {error['error']}")
        wrapped.__cause__ = exc
        try:
            (audit or log_audit)(error, wrapped)
        except Exception:
            log.exception("audit hook failed for %s.%s", name, method)
        return error


__all__ = [
    "AuditHook",
    "BasePlugin",
    "ConfigLayer",
    "ConfigLoader",
    "is_error",
    "log_audit",
    "plugin_label",
    "safe_call",
]
