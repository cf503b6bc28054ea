"""The core plugin: ``corec api`` serves ``plugins.core.api``."""

PLUGIN_NAME = "core"
