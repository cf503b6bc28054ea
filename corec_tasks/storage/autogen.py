"""What Alembic's autogenerate compares: the framework's models and each enabled
plugin's (the ``metadata`` of its manifest), less the monthly partitions.

Here rather than in ``migrations/env.py``, which Alembic runs as a script, so the test
that compares a migrated database with the models uses the very same rules.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import MetaData

from corec_tasks.errors import ConfigurationError, PluginError
from corec_tasks.storage.models import Base
from corec_tasks.storage.partitions import PARTITIONED_TABLES

# Monthly and default partitions come from partition upkeep, not from the models, so
# autogenerate must not offer to drop them.
_TABLES = "|".join(map(re.escape, PARTITIONED_TABLES))
_PARTITION = re.compile(rf"^({_TABLES})_(\d{{4}}_\d{{2}}|default)$")


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object | None
) -> bool:
    """Leave partitions out of autogenerate's diff, and every table no target metadata
    holds (a disabled plugin's, or one whose manifest declares no ``metadata``): those
    belong to a branch of their own, so ``--autogenerate`` never proposes dropping them."""
    if type_ == "table" and reflected and name and _PARTITION.match(name):
        return False
    return not (type_ == "table" and reflected and compare_to is None)


class TargetMetadata(list[MetaData]):
    """The MetaData objects autogenerate compares, keeping the framework's naming
    convention visible to the migrations.

    Why: ``op.create_table`` names unnamed constraints by the ``naming_convention`` of
    the target metadata when it has one (alembic ``SchemaObjects.metadata``); a plain
    list has none, so every revision's primary keys would get PostgreSQL's default names
    and later revisions (``pk_capital_actions``) would not find them.
    """

    @property
    def naming_convention(self) -> Any:
        return self[0].naming_convention


def target_metadata() -> TargetMetadata:
    """The framework's MetaData, then each enabled plugin's, once each. With a config
    that cannot be read, the framework's only (``corec config check`` says why)."""
    from corec_tasks.discovery import enabled, resolve
    from corec_tasks.settings import load_settings

    out = TargetMetadata([Base.metadata])
    try:
        specs = enabled(load_settings())
    except ConfigurationError:
        return out
    for spec in specs:
        if spec.manifest.metadata:
            meta = resolve(spec.manifest.metadata, spec.name)
            if not isinstance(meta, MetaData):
                raise PluginError(spec.name, f"metadata {spec.manifest.metadata!r} is not a "
                                  "SQLAlchemy MetaData")  # fmt: skip
            if all(meta is not m for m in out):
                out.append(meta)
    return out
