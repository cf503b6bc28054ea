"""Where the plugin's config comes from: its ``plugins`` entry, else the packaged YAML."""

from __future__ import annotations

from corec_tasks.settings import Settings
from plugins.capital_pool.config import DEFAULT_PATH, CapitalConfig, load_config

PLUGIN = "capital_pool"


def capital_config(settings: Settings) -> CapitalConfig:
    """The config file named by ``plugins[capital_pool].config_path`` (relative to the
    config file's folder or the working directory), or the packaged default."""
    return load_config(settings.plugin_config_file(PLUGIN) or DEFAULT_PATH)
