"""The feeds plugin: market_monitor, macro_sync and predictor_temporal (seed 000)."""
