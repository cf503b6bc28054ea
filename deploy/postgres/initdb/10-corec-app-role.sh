#!/bin/sh
# docker-entrypoint-initdb.d: runs once, on an empty data volume, as POSTGRES_USER (the
# superuser that owns the tables; the `migrate` service connects as it). Creates the role
# the application connects as: it may log in and nothing more; `corec db upgrade` grants
# it SELECT/INSERT/UPDATE/DELETE, sequences and the partition function. Not a superuser
# nor the owner, it cannot disable the ledger's append-only triggers.
# On an existing volume, run it once by hand:
#   docker compose exec postgres /docker-entrypoint-initdb.d/10-corec-app-role.sh
set -e
if [ -z "$POSTGRES_APP_PASSWORD" ]; then
    echo "set POSTGRES_APP_PASSWORD" >&2
    exit 1
fi
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v app_user="${POSTGRES_APP_USER:-corec_app}" -v app_password="$POSTGRES_APP_PASSWORD" <<'EOSQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_user') AS missing \gset
\if :missing
CREATE ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
\else
ALTER ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
\endif
EOSQL
