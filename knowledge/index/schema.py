"""The parts of the knowledge index Django's models do not describe, per database.

SQLite: an FTS5 table with external content (``knowledge_chunk``), kept in step by three triggers.
Django rebuilds a SQLite table on most ``ALTER``s, which drops its triggers: a later migration
that alters ``knowledge_chunk`` must call ``install`` again (every statement here is idempotent).

PostgreSQL: a generated ``tsvector`` column with a GIN index; and, where the ``vector``
extension (pgvector) is available to this server, the extension itself and a table of vectors
(``knowledge_chunk_vector``) whose rows go when their chunk goes (``ON DELETE CASCADE``). A server
without pgvector migrates all the same; semantic search then scans the vectors in Python
(``knowledge.index.vectors``).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

# The language settings of the lexical indexes. PostgreSQL: the English stemmer and stop words
# ("documents" finds "document", "the" is not indexed). SQLite: words as written, case and
# diacritics folded; no stemmer, so that a query's words are the index's terms and their
# document frequency can be read from the vocabulary table (knowledge/index/sqlite.py).
PG_TS_CONFIG = "english"
SQLITE_TOKENIZER = "unicode61 remove_diacritics 2"

FTS_TABLE = "knowledge_chunk_fts"
FTS_VOCABULARY = "knowledge_chunk_fts_terms"
VECTOR_TABLE = "knowledge_chunk_vector"
# SQLite: one sqlite-vec ``vec0`` table per embedding dimension, partitioned by base
VECTOR_TABLE_PREFIX = "knowledge_chunk_vec"


def vector_table_statements(dimension: int) -> list[str]:
    """The vec0 table of one dimension and the trigger that drops a deleted chunk's row.

    The distance is sqlite-vec's default, L2: the vectors are unit length, so it orders as the
    cosine does, and it is a third cheaper (7.4 against 10.8 ms for 10,000 chunks of 256, measured).
    """
    table = f"{VECTOR_TABLE_PREFIX}{int(dimension)}"
    return [
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING vec0(
            base_id text partition key, embedding float[{int(dimension)}])""",
        f"""CREATE TRIGGER IF NOT EXISTS {table}_forget AFTER DELETE ON knowledge_chunk BEGIN
            DELETE FROM {table} WHERE rowid = old.id;
        END""",
    ]


_SQLITE = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(
        title, text, content='knowledge_chunk', content_rowid='id', tokenize='{SQLITE_TOKENIZER}')""",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_VOCABULARY} USING fts5vocab({FTS_TABLE}, 'row')",
    f"""CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk BEGIN
        INSERT INTO {FTS_TABLE}(rowid, title, text) VALUES (new.id, new.title, new.text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_delete AFTER DELETE ON knowledge_chunk BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_update AFTER UPDATE ON knowledge_chunk BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO {FTS_TABLE}(rowid, title, text) VALUES (new.id, new.title, new.text);
    END""",
    # rows already in the table (a re-install after Django rebuilt it) are indexed again
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')",
]

_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_insert",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_chunk_fts_update",
    f"DROP TABLE IF EXISTS {FTS_VOCABULARY}",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
]

_POSTGRES = [
    f"""ALTER TABLE knowledge_chunk ADD COLUMN IF NOT EXISTS search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('{PG_TS_CONFIG}', coalesce(title, '')), 'A')
        || to_tsvector('{PG_TS_CONFIG}', text)) STORED""",
    # fastupdate off: new rows go into the index itself, not a pending list every search would
    # read through (measured: 11 ms of a 10,000-chunk search before autovacuum merged the list)
    "CREATE INDEX IF NOT EXISTS knowledge_chunk_search ON knowledge_chunk USING GIN (search) "
    "WITH (fastupdate = off)",
    "ALTER INDEX knowledge_chunk_search SET (fastupdate = off)",
]

_POSTGRES_DROP = [
    "DROP INDEX IF EXISTS knowledge_chunk_search",
    "ALTER TABLE knowledge_chunk DROP COLUMN IF EXISTS search",
]

# ``vector`` without a dimension holds every base's vectors; ``dimension`` keeps a query to the
# rows of its own size (a base being re-indexed for a new model briefly has both). No foreign key:
# Django's test flush truncates only its own tables, and a reference would stop it; a trigger
# removes a chunk's vector instead, and writes upsert over any row a truncate left behind.
_PGVECTOR = [
    f"""CREATE TABLE IF NOT EXISTS {VECTOR_TABLE} (
        chunk_id bigint PRIMARY KEY,
        base_id uuid NOT NULL,
        document_id uuid NOT NULL,
        dimension integer NOT NULL,
        embedding vector NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS {VECTOR_TABLE}_base ON {VECTOR_TABLE} (base_id, dimension)",
    f"""CREATE OR REPLACE FUNCTION knowledge_chunk_vector_forget() RETURNS trigger AS $$
    BEGIN
        DELETE FROM {VECTOR_TABLE} WHERE chunk_id = OLD.id;
        RETURN OLD;
    END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS knowledge_chunk_vector_forget ON knowledge_chunk",
    """CREATE TRIGGER knowledge_chunk_vector_forget AFTER DELETE ON knowledge_chunk
        FOR EACH ROW EXECUTE FUNCTION knowledge_chunk_vector_forget()""",
]


def install(connection: BaseDatabaseWrapper) -> None:
    """Create the lexical index (and pgvector's table where possible) on ``connection``."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for statement in _SQLITE:
                cursor.execute(statement)
            # the triggers of the vec0 tables already made (the tables live on through a rebuild)
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB %s",
                [f"{VECTOR_TABLE_PREFIX}[0-9]*"],
            )
            for (name,) in cursor.fetchall():
                suffix = name[len(VECTOR_TABLE_PREFIX) :]
                if suffix.isdigit():
                    for statement in vector_table_statements(int(suffix))[1:]:
                        cursor.execute(statement)
        elif connection.vendor == "postgresql":
            for statement in _POSTGRES:
                cursor.execute(statement)
    if connection.vendor == "postgresql":
        install_pgvector(connection)


def install_pgvector(connection: BaseDatabaseWrapper) -> bool:
    """Enable pgvector and create the vector table; False (and nothing changed) where the server
    has no such extension or this role may not create it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if cursor.fetchone() is None:
            logger.info("knowledge: pgvector is not available; semantic search scans in Python")
            return False
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
            for statement in _PGVECTOR:
                cursor.execute(statement)
    except Exception as exc:  # a role without the right to create extensions: scan instead
        logger.warning("knowledge: pgvector could not be enabled (%s); semantic search scans in Python", exc)
        return False
    return True


def uninstall(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB %s",
                [f"{VECTOR_TABLE_PREFIX}[0-9]*"],
            )
            for (name,) in cursor.fetchall():
                if name[len(VECTOR_TABLE_PREFIX) :].isdigit():
                    cursor.execute(f"DROP TRIGGER IF EXISTS {name}_forget")
                    cursor.execute(f"DROP TABLE IF EXISTS {name}")
            for statement in _SQLITE_DROP:
                cursor.execute(statement)
        elif connection.vendor == "postgresql":
            cursor.execute("DROP TRIGGER IF EXISTS knowledge_chunk_vector_forget ON knowledge_chunk")
            cursor.execute("DROP FUNCTION IF EXISTS knowledge_chunk_vector_forget()")
            cursor.execute(f"DROP TABLE IF EXISTS {VECTOR_TABLE}")
            for statement in _POSTGRES_DROP:
                cursor.execute(statement)
