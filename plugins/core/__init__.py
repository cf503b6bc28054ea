"""The core plugin (seed 003): the HTTP API server and the trading loop."""
