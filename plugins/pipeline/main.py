"""The pipeline plugin: ``trading.cycle`` (beat) fans ``trading.process_assets`` tasks."""

PLUGIN_NAME = "pipeline"
