"""The nucleus (CoreCNucleus): loads plugins, owns the block store and the modules.

Lifecycle as in the seed: ``initialize`` (infrastructure, plugins, modules),
``run`` (register blocks, dispatch a cycle), ``stop`` (land pending block results
in PostgreSQL, close Redis). A worker process has one, ``worker_nucleus()``, a
service of its runtime (corec_tasks/runtime.py).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import Engine, persist_block_results
from corec_tasks.blocks.processors import ProcessorRegistry
from corec_tasks.blocks.store import BlockStore
from corec_tasks.discovery import enabled
from corec_tasks.errors import PluginError
from corec_tasks.manifest import Manifest
from corec_tasks.modules.audit import AuditModule
from corec_tasks.modules.execution import ExecutionModule
from corec_tasks.modules.registry import RegistryModule
from corec_tasks.modules.sync import SyncModule
from corec_tasks.plugin_info import read_own_config
from corec_tasks.runtime import Runtime, runtime
from corec_tasks.settings import Settings

log = logging.getLogger("corec_tasks.nucleus")


@dataclass
class Plugin:
    """A loaded plugin: its manifest (plugin.json), code (its ``entry``) and own config."""

    name: str
    folder: Path
    manifest: Manifest
    module: ModuleType
    config: dict[str, Any] = field(default_factory=dict)


def load_plugins(settings: Settings, registry: ProcessorRegistry) -> list[Plugin]:
    """Import each enabled plugin and let it add its processors to ``registry``."""
    out = []
    for spec_ in enabled(settings):
        name, folder, manifest = spec_.name, spec_.folder, spec_.manifest
        own_file = settings.plugin_config_file(name)
        own = read_own_config(own_file) if own_file else {}
        spec = importlib.util.spec_from_file_location(f"corec_plugins.{name}",
                                                      folder / manifest.entry)  # fmt: skip
        if spec is None or spec.loader is None:
            raise PluginError(name, f"cannot import {folder / manifest.entry}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            hook = getattr(module, "register_processors", None)
            if hook is not None:
                hook(registry)
        except Exception as exc:  # plugin code: one named error, never a crash
            raise PluginError(name, f"failed to load: {exc!r}") from exc
        out.append(Plugin(name, folder, manifest, module, own))
        log.info("[Nucleus] plugin %s %s loaded", name, manifest.version)
    return out


class Nucleus:
    """Orchestrates initialisation, execution and shutdown of CoreC."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = default_registry()
        self.plugins: list[Plugin] = []
        self.store = BlockStore(settings)  # redis-py connects on first use
        self.modules: dict[str, Any] = {}

    @property
    def plugin_groups(self) -> set[str]:
        """Block groups owned by enabled plugins (executed first)."""
        return {p.bloque.bloque_id for p in self.settings.config.plugins
                if p.enabled and p.bloque}  # fmt: skip

    @property
    def engine(self) -> Engine:
        return Engine(self.settings, self.store, self.registry)

    def initialize(self) -> None:
        """Connect to Redis, load plugins and initialise the four modules."""
        self.store.r.ping()
        self.plugins = load_plugins(self.settings, self.registry)
        for cls in (RegistryModule, ExecutionModule, SyncModule, AuditModule):
            module = cls()
            module.initialize(self)
            self.modules[cls.name] = module
        log.info("[CoreCNucleus] Inicializado: %d plugins", len(self.plugins))

    def run(self) -> dict[str, Any]:
        """Register blocks, then dispatch one cycle."""
        registered = self.modules["registry"].run()
        return {"registry": registered, "cycle": self.modules["execution"].run()}

    def stop(self) -> dict[str, int]:
        """Land pending block results in PostgreSQL and close Redis."""
        for module in self.modules.values():
            module.stop()
        flushed = persist_block_results(self.settings, self.store.r)
        self.store.r.close()
        return flushed


def worker_nucleus() -> Nucleus:
    """The nucleus of this worker process, built on first use."""
    return runtime().service("corec.nucleus", _initialized_nucleus)


def _initialized_nucleus(rt: Runtime) -> Nucleus:
    nucleus = Nucleus(rt.settings)
    nucleus.initialize()
    return nucleus
