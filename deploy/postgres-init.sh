#!/bin/sh
# Runs once, when the primary's data directory is created (docker-entrypoint-initdb.d): a
# replication role for deploy/docker-compose.yml's streaming replica, allowed from the network.
set -e
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'replicator';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
