"""The ``strategy`` plugin: a prediction-threshold strategy (seed 003 §4)."""
