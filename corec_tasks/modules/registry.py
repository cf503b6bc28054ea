"""ModuloRegistro: registers the blocks of ``bloques`` and of each enabled plugin."""

from __future__ import annotations

from typing import Any, ClassVar

from corec_tasks.blocks.model import specs_from_config
from corec_tasks.modules.base import Module


class RegistryModule(Module):
    """Create every configured block in Redis once; existing blocks are left as they are.

    Entity ids are assigned in config order (global blocks, then plugin blocks), so
    every node computes the same ids for the same config.
    """

    name: ClassVar[str] = "registry"

    def run(self) -> dict[str, Any]:
        config = self.nucleus.settings.config
        plugin_groups = self.nucleus.plugin_groups
        extras = {
            b.id: {"intervalo_s": b.intervalo_s, "plugin": b.id in plugin_groups}
            for b in config.all_blocks()
        }
        created = self.nucleus.store.create(specs_from_config(config.all_blocks()), extras=extras)
        return {"registered": created, "blocks": self.nucleus.store.count()}
