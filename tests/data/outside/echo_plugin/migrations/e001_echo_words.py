"""echo_plugin's table, on a branch of its own that depends on the framework's."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e001_echo"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("echo_plugin",)
depends_on: str | Sequence[str] | None = "0001"


def upgrade() -> None:
    op.create_table(
        "echo_words",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("word", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("echo_words")
