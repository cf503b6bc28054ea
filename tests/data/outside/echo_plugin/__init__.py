"""echo_plugin: a plugin for the tests only, found through COREC_PLUGIN_PATH."""
