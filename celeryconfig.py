"""Celery settings, read from CoreC's typed settings object (never the reverse).

The app applies ``corec_tasks.celeryconfig.build(settings)`` itself; this module
holds the same settings as module attributes for whoever reads Celery settings from
a module (``celery --config celeryconfig``, a deployment's own app).
"""

from corec_tasks.celeryconfig import build
from corec_tasks.runtime import get_settings

globals().update(build(get_settings()))
