"""The pipeline plugin: ``trading.cycle`` (beat) fans ``trading.process_asset`` tasks."""

PLUGIN_NAME = "pipeline"
