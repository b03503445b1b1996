#!/bin/sh
# Runs once, when the PostgreSQL volume is first made: pgvector (the compose file's image is
# pgvector's build of PostgreSQL) enabled in Nexus's database by the superuser, since Nexus's own
# role may not create extensions; knowledge search then ranks vectors in the database
# (docs/knowledge.md). On a server without pgvector it does nothing (Nexus scans in Python).
set -eu
app_db="${NEXUS_DB_NAME:-nexus}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$app_db" <<'SQL'
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
    CREATE EXTENSION IF NOT EXISTS vector;
  END IF;
END $$;
SQL
