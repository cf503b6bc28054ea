"""PostgreSQL storage: models, migrations, monthly partitions and the batch writer.

``migrate`` (Alembic) is imported on demand: workers that only write need not load it.
"""

from corec_tasks.storage.models import Base, Bloque, Evento
from corec_tasks.storage.partitions import (
    PartitionInfo,
    ensure_partitions,
    list_partitions,
    month_bounds,
    months_from,
    partition_name,
)
from corec_tasks.storage.writer import (
    BlockRow,
    EventRow,
    executemany_events,
    write_blocks,
    write_events,
)

__all__ = [
    "Base",
    "BlockRow",
    "Bloque",
    "EventRow",
    "Evento",
    "PartitionInfo",
    "ensure_partitions",
    "executemany_events",
    "list_partitions",
    "month_bounds",
    "months_from",
    "partition_name",
    "write_blocks",
    "write_events",
]
