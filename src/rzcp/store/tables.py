"""The database schema: the versioned resource store and its search index.

Each resource has one row in `resources` (its current version, ready to send as bytes) and one row per
version in `resource_versions`. The index tables hold one row per (resource, search parameter, value) of
the current version only; they are rewritten on every write, so a search never sees an old version.
Index rows carry `res_type` and `param` so that each search parameter is one range scan of one index.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
PrimaryKey = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=False), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    #: The current version as sent on the wire (JSON with meta.versionId/lastUpdated); empty when deleted.
    Column("content", Text, nullable=False),
    UniqueConstraint("res_type", "res_id"),
    Index(None, "res_type", "last_updated"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("res_pk", PrimaryKey, ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=False), nullable=False),
    #: create, update or delete: what made this version (history's request.method).
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=False),
    UniqueConstraint("res_pk", "version_id"),
    Index(None, "res_type", "last_updated"),
    Index(None, "last_updated"),
)


def _index_table(name: str, *columns: Column, value_index: tuple[str, ...]) -> Table:
    return Table(
        name,
        metadata,
        Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        Column("res_pk", PrimaryKey, ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Index(None, "res_pk"),
        Index(None, "res_type", "param", *value_index),
    )


#: string parameters: `value_norm` is lower-cased with accents removed (the default and :contains),
#: `value_exact` the value as written (:exact).
idx_string = _index_table(
    "idx_string",
    Column("value_norm", String(512), nullable=False),
    Column("value_exact", String(512), nullable=False),
    value_index=("value_norm",),
)

#: token parameters: Coding, CodeableConcept, Identifier, ContactPoint, code, boolean, id.
#: `text` holds the display/text, normalised like strings, for :text.
idx_token = _index_table(
    "idx_token",
    Column("system", String(512), nullable=True),
    Column("code", String(512), nullable=True),
    Column("text", String(512), nullable=True),
    value_index=("code", "system"),
)

#: reference parameters: a local reference split into type and id; any other into `url`.
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", String(1024), nullable=True),
    value_index=("target_id", "target_type"),
)

#: date parameters: the value as the closed range [low, high] it covers, in naive UTC.
idx_date = _index_table(
    "idx_date",
    Column("low", DateTime(timezone=False), nullable=False),
    Column("high", DateTime(timezone=False), nullable=False),
    value_index=("low", "high"),
)

#: number and quantity parameters: the value and the range its precision implies; units for quantities.
idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("system", String(512), nullable=True),
    Column("code", String(128), nullable=True),
    Column("unit", String(128), nullable=True),
    value_index=("value",),
)

#: uri parameters.
idx_uri = _index_table(
    "idx_uri",
    Column("value", String(1024), nullable=False),
    value_index=("value",),
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_quantity,
    "quantity": idx_quantity,
    "uri": idx_uri,
}
