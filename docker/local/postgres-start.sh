#!/bin/sh
# First start: a cluster whose superuser `avar` has the password from POSTGRES_PASSWORD
# (read from the environment, never written to a file that stays) and the databases of
# AVAR_DATABASES. Then Postgres on 127.0.0.1:PGPORT only.
set -eu
: "${POSTGRES_PASSWORD:?set AVAR_DB_PASSWORD in docker/avar.env}"
: "${PGPORT:=5432}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  secret=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" > "$secret"
  initdb --pgdata="$PGDATA" --username=avar --pwfile="$secret" \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  rm -f "$secret"
  for db in ${AVAR_DATABASES:-mlflow prefect}; do
    echo "CREATE DATABASE $db OWNER avar;" | postgres --single -D "$PGDATA" template1 >/dev/null
  done
  echo "postgres-start: made the cluster with databases ${AVAR_DATABASES:-mlflow prefect}"
fi
exec postgres -D "$PGDATA" -p "$PGPORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories=/tmp
