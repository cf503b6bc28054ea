"""capital_pool: a fair, exact, idempotent shared capital pool (seed 000).

Members own units of the pool; NAV per unit = equity / units. Every change is an
append-only ledger entry in PostgreSQL with its idempotency key; pool state is derived
from the ledger and checked against it. Money is ``Decimal``, stored as ``NUMERIC``.
"""
