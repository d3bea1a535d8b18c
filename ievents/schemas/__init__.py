"""Avro schemas (the ``.avsc`` files here are the source of truth) and the wire codec."""

from ievents.schemas.codec import (
    ENRICHED,
    RAW,
    AvroCodec,
    InvalidAvro,
    InvalidRecord,
    InvalidValue,
    LocalSchemaCatalog,
    NotConfluentFramed,
    RegistrySchemaSource,
    SchemaError,
    SchemaSource,
    UnknownSchemaId,
    schema_source,
)
from ievents.schemas.dead_letter import REASON_HEADER as DLQ_REASON_HEADER
from ievents.schemas.dead_letter import dead_letter, dead_letter_record

__all__ = [
    "DLQ_REASON_HEADER",
    "ENRICHED",
    "RAW",
    "AvroCodec",
    "InvalidAvro",
    "InvalidRecord",
    "InvalidValue",
    "LocalSchemaCatalog",
    "NotConfluentFramed",
    "RegistrySchemaSource",
    "SchemaError",
    "SchemaSource",
    "UnknownSchemaId",
    "dead_letter",
    "dead_letter_record",
    "schema_source",
]
