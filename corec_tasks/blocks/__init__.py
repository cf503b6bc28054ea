"""Symbiotic blocks: the model, its Redis store, the engine that runs it, cycles and tasks.

``model`` (a block and its entities' arrays), ``entities`` (the wire record),
``processors`` (the processor contract and registry) and ``builtin`` (the built-in
processors), ``store`` (block state in Redis, compare-and-set), ``feed`` (stream-fed
blocks' input), ``engine`` (runs blocks, publishes results), ``cycle`` (a cycle's
fan-out and bookkeeping) and ``tasks`` (the Celery tasks). Importing this package
imports none of them, so a CLI command pays only for what it uses.
"""
