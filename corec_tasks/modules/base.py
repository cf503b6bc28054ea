"""The module contract (seed 004 §2.4, ``ModuloBase``): initialize, run, stop.

The seed's modules are ``async``; here they are plain methods, because they run
inside Celery tasks (one call per beat tick), not in a long-lived event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class Module(ABC):
    """An internal component of the nucleus (registry, execution, sync, audit).

    ``nucleus`` is duck-typed: a module reads the attributes it needs from it
    (``settings``, and optionally ``store`` and ``bus``), so modules can run under
    the nucleus, a Celery task or a test alike.
    """

    #: Bump when the contract below changes incompatibly.
    INTERFACE_VERSION: ClassVar[int] = 1
    #: Short name for logs and reports (the seed's ``[ModuloSincronizacion]``).
    name: ClassVar[str]

    #: The nucleus passed to :meth:`initialize` (None before).
    nucleus: Any = None

    def initialize(self, nucleus: Any) -> None:
        """Set up from ``nucleus``; the default only keeps a reference to it."""
        self.nucleus = nucleus

    @abstractmethod
    def run(self) -> Any:
        """Do one round of the module's recurring work and report what it did."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default does nothing."""
