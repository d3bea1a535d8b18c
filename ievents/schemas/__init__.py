"""Avro schemas (the ``.avsc`` files here are the source of truth) and the wire codec."""

from ievents.schemas.codec import (
    ENRICHED,
    RAW,
    AvroCodec,
    InvalidAvro,
    InvalidRecord,
    LocalSchemaCatalog,
    NotConfluentFramed,
    RegistrySchemaSource,
    SchemaError,
    SchemaSource,
    UnknownSchemaId,
    schema_source,
)

__all__ = [
    "ENRICHED",
    "RAW",
    "AvroCodec",
    "InvalidAvro",
    "InvalidRecord",
    "LocalSchemaCatalog",
    "NotConfluentFramed",
    "RegistrySchemaSource",
    "SchemaError",
    "SchemaSource",
    "UnknownSchemaId",
    "schema_source",
]
