#!/bin/sh
# The database `query_database` reads in docker-compose.yml, and a role of its own to read it.
#
# PostgreSQL's image runs this once, when its data volume is first made
# (/docker-entrypoint-initdb.d). The role is no superuser and may only SELECT the demo tables: the
# tool refuses a superuser role and the application's own database (docs/tools.md).
#
# Environment: NEXUS_TOOLS_DB_PASSWORD (required), NEXUS_TOOLS_DB_NAME (default nexus_demo),
# NEXUS_TOOLS_DB_USER (default nexus_tools_reader), POSTGRES_USER (the image's admin role).
# The rows are those of agents/demo_data.py (tests/tools/test_compose_tools_role.py checks).
set -eu

: "${NEXUS_TOOLS_DB_PASSWORD:?NEXUS_TOOLS_DB_PASSWORD must be set}"
TOOLS_DB="${NEXUS_TOOLS_DB_NAME:-nexus_demo}"
TOOLS_USER="${NEXUS_TOOLS_DB_USER:-nexus_tools_reader}"
ADMIN="${POSTGRES_USER:-postgres}"

psql -v ON_ERROR_STOP=1 --username "$ADMIN" --dbname postgres \
    -v tools_db="$TOOLS_DB" -v tools_user="$TOOLS_USER" -v tools_password="$NEXUS_TOOLS_DB_PASSWORD" <<'SQL'
CREATE ROLE :"tools_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 20 PASSWORD :'tools_password';
ALTER ROLE :"tools_user" SET default_transaction_read_only = on;
CREATE DATABASE :"tools_db";
REVOKE ALL ON DATABASE :"tools_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"tools_db" TO :"tools_user";
SQL

psql -v ON_ERROR_STOP=1 --username "$ADMIN" --dbname "$TOOLS_DB" -v tools_user="$TOOLS_USER" <<'SQL'
REVOKE ALL ON SCHEMA public FROM PUBLIC;
CREATE TABLE public.portfolios (
    id integer PRIMARY KEY, name text NOT NULL, owner text NOT NULL, cash numeric(12, 2) NOT NULL
);
CREATE TABLE public.holdings (
    id integer PRIMARY KEY, portfolio_id integer NOT NULL REFERENCES public.portfolios (id),
    symbol text NOT NULL, quantity integer NOT NULL, price double precision NOT NULL
);
INSERT INTO public.portfolios VALUES
    (1, 'Growth', 'alice', 125000.0),
    (2, 'Income', 'bob', 80500.0),
    (3, 'Balanced', 'carol', 230250.0);
INSERT INTO public.holdings VALUES
    (1, 1, 'NVDA', 120, 118.5),
    (2, 1, 'MSFT', 60, 415.2),
    (3, 1, 'TSLA', 40, 251.1),
    (4, 2, 'JNJ', 150, 158.3),
    (5, 2, 'KO', 300, 62.4),
    (6, 2, 'VZ', 400, 40.8),
    (7, 3, 'AAPL', 200, 227.5),
    (8, 3, 'BND', 500, 72.9),
    (9, 3, 'VTI', 250, 281.6);
GRANT USAGE ON SCHEMA public TO :"tools_user";
GRANT SELECT ON public.portfolios, public.holdings TO :"tools_user";
SQL
