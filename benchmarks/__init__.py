"""Benchmarks: `make bench` (all) or `make bench ONLY=name`. Not tests."""
