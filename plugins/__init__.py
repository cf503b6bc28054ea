"""CoreC plugins: one folder per plugin (plugin.json, main.py, its config, its code).

Plugins with Python code beyond ``main.py`` are importable as ``plugins.<name>`` so
Celery workers can register their tasks by module name.
"""
