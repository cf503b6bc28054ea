"""The seed's example plugin. Its block comes from corec_config.json's ``bloque``."""

PLUGIN_NAME = "example_plugin"
