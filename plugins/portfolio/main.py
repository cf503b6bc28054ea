"""The portfolio plugin's entry point (the seed's portfolio plugin type).

The allocation math is in ``plugins.portfolio.allocation``; the nucleus loads this
file by path, so it holds no relative imports.
"""

PLUGIN_NAME = "portfolio"
