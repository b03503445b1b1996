#!/bin/sh
# Runs once, when the PostgreSQL volume is first made (the image runs every script in
# /docker-entrypoint-initdb.d): Nexus's own role, which is not a superuser and cannot make
# databases or roles, owning Nexus's database (so `migrate` can create its tables). Nexus
# connects only as this role; the superuser (POSTGRES_USER) stays with the operator.
set -eu
: "${NEXUS_DB_PASSWORD:?set NEXUS_DB_PASSWORD}"
app_user="${NEXUS_DB_USER:-nexus}"
app_db="${NEXUS_DB_NAME:-nexus}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v app_user="$app_user" -v app_password="$NEXUS_DB_PASSWORD" -v app_db="$app_db" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE :"app_db" OWNER :"app_user";
-- Only its owner (and roles granted CONNECT explicitly) may connect to Nexus's database.
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
SQL
