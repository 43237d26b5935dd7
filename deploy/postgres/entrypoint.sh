#!/bin/sh
# farebox-postgres - create the cluster on first start, then run PostgreSQL in the foreground.
#   POSTGRES_PASSWORD_FILE  the farebox role's password (required on first start)
#   POSTGRES_MAX_CONNECTIONS (200), POSTGRES_SHARED_BUFFERS (256MB)
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -s "$POSTGRES_PASSWORD_FILE" ] ||
        { echo "farebox-postgres: POSTGRES_PASSWORD_FILE must name a non-empty file" >&2; exit 2; }
    initdb -D "$PGDATA" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    {
        echo "listen_addresses = '*'"
        echo "password_encryption = scram-sha-256"
    } >>"$PGDATA/postgresql.conf"
    # the socket: the cluster's owner by its OS user (pg_dump, psql through docker exec); every
    # other role, on the socket or over the network, by its password
    {
        echo "local all postgres peer"
        echo "local all all scram-sha-256"
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >"$PGDATA/pg_hba.conf"
    pw=$(cat "$POSTGRES_PASSWORD_FILE")
    postgres -D "$PGDATA" -c listen_addresses='' -k /var/run/postgresql &
    pid=$!
    until pg_isready -q -h /var/run/postgresql; do sleep 0.2; done
    psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U postgres -d postgres -v pw="$pw" <<'SQL'
CREATE ROLE farebox LOGIN PASSWORD :'pw';
CREATE DATABASE farebox OWNER farebox;
SQL
    kill -INT "$pid"
    wait "$pid" || true
    echo "farebox-postgres: cluster created" >&2
fi
exec postgres -D "$PGDATA" -k /var/run/postgresql \
    -c max_connections="${POSTGRES_MAX_CONNECTIONS:-200}" \
    -c shared_buffers="${POSTGRES_SHARED_BUFFERS:-256MB}"
