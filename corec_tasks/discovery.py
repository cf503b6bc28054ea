"""Where plugins are found, and which are enabled: the one door plugins come in by.

A plugin is a folder holding ``plugin.json`` (corec_tasks.manifest). The folder of
plugin ``NAME`` is looked for, first hit wins, in:

1. each folder on ``COREC_PLUGIN_PATH`` (``os.pathsep``-separated): ``<dir>/NAME``;
   the folder ``<dir>`` is put on ``sys.path``, so the plugin's modules import as
   ``NAME.tasks``, ``NAME.cli``, ...;
2. ``plugins/NAME`` beside the config file, then in the working directory;
3. an installed distribution advertising the entry point group ``corec.plugins``
   (``NAME = package``, the package's folder holds ``plugin.json``).

Only the plugins enabled in ``corec_config.json`` are wired; a disabled one leaves no
trace. The framework imports plugin code only through ``resolve`` on what a manifest
declares, never by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from corec_tasks.config import PluginConfig
from corec_tasks.errors import ConfigurationError, PluginError
from corec_tasks.manifest import MANIFEST, Manifest, read_manifest
from corec_tasks.settings import Settings

ENTRY_POINT_GROUP = "corec.plugins"


@dataclass(frozen=True)
class PluginSpec:
    """An enabled plugin as found: its config entry, folder and manifest."""

    entry: PluginConfig
    folder: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.entry.name


def path_dirs(settings: Settings) -> list[Path]:
    """The folders on ``COREC_PLUGIN_PATH``."""
    return [Path(p) for p in settings.env.plugin_path.split(os.pathsep) if p.strip()]


def _entry_point_folders() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = importlib.util.find_spec(ep.module)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)))
        elif spec.origin:
            folder = Path(spec.origin).parent
        else:
            continue
        out.setdefault(ep.name, folder)
    return out


def _local_bases(settings: Settings) -> list[Path]:
    return [settings.config_path.resolve().parent / "plugins", Path.cwd() / "plugins"]


def find_folder(settings: Settings, name: str) -> Path:
    """The folder of plugin ``name``; a ConfigurationError says where it looked."""
    for base in path_dirs(settings):
        if (base / name / MANIFEST).is_file():
            _importable(base)
            return base / name
    for base in _local_bases(settings):
        if (base / name / MANIFEST).is_file():
            return base / name
    folder = _entry_point_folders().get(name)
    if folder is not None and (folder / MANIFEST).is_file():
        return folder
    where = "COREC_PLUGIN_PATH, plugins/ beside the config or here, or entry points "
    raise ConfigurationError([(f"plugins.{name}", f"not found ({where}{ENTRY_POINT_GROUP})")])


def available(settings: Settings) -> dict[str, Path]:
    """Every plugin folder that can be found, by name (first hit wins, as above)."""
    out: dict[str, Path] = {}
    candidates = [(base, True) for base in path_dirs(settings)]
    candidates += [(base, False) for base in _local_bases(settings)]
    for base, on_path in candidates:
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if (folder / MANIFEST).is_file() and folder.name not in out:
                if on_path:
                    _importable(base)
                out[folder.name] = folder
    for name, folder in _entry_point_folders().items():
        out.setdefault(name, folder)
    return out


def _importable(base: Path) -> None:
    """Put a COREC_PLUGIN_PATH folder on sys.path, so its plugins' modules import."""
    text = str(base.resolve())
    if text not in sys.path:
        sys.path.append(text)


def enabled(settings: Settings) -> list[PluginSpec]:
    """The enabled plugins of ``settings``, in config order, with their manifests; a
    ConfigurationError when one requires a plugin that is not enabled."""
    out = []
    for entry in settings.config.plugins:
        if not entry.enabled:
            continue
        folder = find_folder(settings, entry.name)
        manifest = read_manifest(folder)
        if manifest.name != entry.name:
            problem = (f"plugins.{entry.name}", f"{folder / MANIFEST} names {manifest.name!r}")
            raise ConfigurationError([problem])
        out.append(PluginSpec(entry, folder, manifest))
    problems = requires_problems(settings, out)
    if problems:
        raise ConfigurationError(problems, f"plugins of {settings.config_path}")
    return out


def requires_problems(settings: Settings, specs: list[PluginSpec]) -> list[tuple[str, str]]:
    """``(key, message)`` for each plugin of ``specs`` (the enabled ones) whose manifest
    ``requires`` a plugin that is not among them.

    Why at load: a plugin importing another that is disabled would fail later, in a
    worker, at its first task; enabled together, both are wired (tasks, consumers,
    migrations) and the import finds what it expects.
    """
    on = {s.name for s in specs}
    index = {p.name: i for i, p in enumerate(settings.config.plugins)}
    out = []
    for spec in specs:
        missing = [r for r in spec.manifest.requires if r not in on]
        if missing:
            which = "which are" if len(missing) > 1 else "which is"
            out.append((f"plugins[{index[spec.name]}].requires",
                        f"{spec.name} requires {', '.join(missing)}, {which} not enabled"))
    return out


def resolve(ref: str, plugin: str = "?") -> Any:
    """The object an import string (``"module"`` or ``"module:attr.attr"``) names."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(plugin, f"cannot resolve {ref!r}: {exc}") from exc
    return obj
