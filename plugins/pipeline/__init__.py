"""The pipeline plugin (seed 003 §3) and the full trading cycle (seed 003 §7)."""
