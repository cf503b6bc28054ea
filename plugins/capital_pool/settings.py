"""Where the plugin's config comes from: its ``plugins`` entry, else the packaged YAML."""

from __future__ import annotations

from pathlib import Path

from corec_tasks.settings import Settings
from plugins.capital_pool.config import DEFAULT_PATH, CapitalConfig, load_config

PLUGIN = "capital_pool"


def capital_config(settings: Settings) -> CapitalConfig:
    """The config file named by ``plugins[capital_pool].config_path`` (relative to the
    config file's folder or the working directory), or the packaged default."""
    for entry in settings.config.plugins:
        if entry.name == PLUGIN and entry.config_path:
            for base in (settings.config_path.resolve().parent, Path.cwd()):
                if (base / entry.config_path).is_file():
                    return load_config(base / entry.config_path)
            return load_config(entry.config_path)  # raises naming the missing file
    return load_config(DEFAULT_PATH)
