"""The AAA plugin's entry point: authentication, authorization, audit (seed 003 §1)."""

from plugins.aaa.service import AAAPlugin

PLUGIN_NAME = "aaa"

__all__ = ["PLUGIN_NAME", "AAAPlugin"]
