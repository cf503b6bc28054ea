"""Prometheus metrics of a CoreC cluster: ``corec metrics serve``.

``cluster`` reads the framework's state from Redis at scrape time, ``counters``
keeps the cluster-wide event counts workers add, ``exporter`` joins them with the
plugins' collectors into one registry.
"""
