"""``python -m corec_tasks.cli`` is ``corec``."""

from corec_tasks.cli import main

main()
