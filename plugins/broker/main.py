"""The broker plugin's entry point (the seed's broker plugin type).

The paper exchange is ``plugins.broker.paper``, the order path
``plugins.broker.service``; the nucleus loads this file by path, so it holds no
relative imports.
"""

PLUGIN_NAME = "broker"
