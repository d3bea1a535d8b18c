"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary.

Every message names the schema it was written with, so a reader can always
resolve it against the schema it expects (Avro schema resolution): a producer
on a newer schema version never breaks an older consumer. Schema ids come
from a Schema Registry when one is configured, otherwise from ``catalog.json``
beside the ``.avsc`` files; both sources have the same two-method surface.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import fastavro

SCHEMA_DIR = Path(__file__).parent
MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

RAW = "raw"
ENRICHED = "enriched"


class SchemaError(Exception):
    """A message could not be decoded; ``reason`` is a short machine-readable cause."""

    reason = "decode_error"


class NotConfluentFramed(SchemaError):
    reason = "not_confluent_framed"


class UnknownSchemaId(SchemaError):
    reason = "unknown_schema_id"


class InvalidAvro(SchemaError):
    reason = "invalid_avro"


class InvalidValue(SchemaError):
    """Well-formed Avro whose value cannot be what its logical type says: an empty uuid, a timestamp no
    calendar holds. ``reason`` is the check it fails (``missing_field``, ``invalid_timestamp``), the same
    words the stream's own validation uses."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidRecord(SchemaError):
    """A record does not fit the schema it is being written with."""

    reason = "invalid_record"


class SchemaSource(Protocol):
    def writer_schema_id(self, kind: str) -> int:
        """The id writers of ``kind`` (raw / enriched) put in front of each message."""

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The parsed schema for an id; raises UnknownSchemaId."""


@lru_cache(maxsize=None)
def load_schema(file_name: str) -> dict[str, Any]:
    """A parsed ``.avsc`` from this folder (parsed once per process)."""
    return fastavro.parse_schema(json.loads((SCHEMA_DIR / file_name).read_text()))


class LocalSchemaCatalog:
    """Schema ids from ``catalog.json``: the embedded default, no registry needed."""

    def __init__(self, catalog_path: Path = SCHEMA_DIR / "catalog.json") -> None:
        entries = json.loads(catalog_path.read_text())["schemas"]
        self._files = {entry["id"]: entry["file"] for entry in entries}
        self._latest: dict[str, int] = {}
        for entry in sorted(entries, key=lambda e: e["id"]):
            self._latest[entry["kind"]] = entry["id"]

    def writer_schema_id(self, kind: str) -> int:
        return self._latest[kind]

    def schema(self, schema_id: int) -> dict[str, Any]:
        try:
            return load_schema(self._files[schema_id])
        except KeyError:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the local catalog") from None


class RegistrySchemaSource:
    """Schema ids from a Confluent-compatible Schema Registry (subject ``<topic>-value``).

    Our own schemas are registered on first use; the registry enforces its
    compatibility rule (BACKWARD) so an incompatible change fails loudly there.
    """

    def __init__(self, url: str, subjects: dict[str, str]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._subjects = subjects
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def writer_schema_id(self, kind: str) -> int:
        if kind not in self._ids:
            from confluent_kafka.schema_registry import Schema

            text = (SCHEMA_DIR / f"{kind}_event.avsc").read_text()
            self._ids[kind] = self._client.register_schema(self._subjects[kind], Schema(text, "AVRO"))
        return self._ids[kind]

    def schema(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._schemas:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                text = self._client.get_schema(schema_id).schema_str
            except SchemaRegistryError as exc:
                raise UnknownSchemaId(f"schema id {schema_id}: {exc}") from None
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        return self._schemas[schema_id]


def without_logical_types(schema: Any) -> Any:
    """The same binary layout with logical types dropped: uuids stay strings, timestamps stay epoch-millis ints."""
    if isinstance(schema, dict):
        return {key: without_logical_types(value) for key, value in schema.items()
                if key not in ("logicalType", "__fastavro_parsed", "__named_schemas")}
    if isinstance(schema, list):
        return [without_logical_types(item) for item in schema]
    return schema


class AvroCodec:
    """Encodes and decodes one kind of record (raw or enriched) in the Confluent wire format.

    ``logical_types=False`` decodes uuids as strings and timestamps as epoch
    milliseconds, skipping fastavro's per-value conversions (about a quarter of
    decode time): for a consumer such as the sink that hands values straight
    to ClickHouse, which takes both as they are.
    """

    def __init__(self, source: SchemaSource, kind: str, *, logical_types: bool = True) -> None:
        self._source = source
        self._logical_types = logical_types
        self._writer_id = source.writer_schema_id(kind)
        self._schema = self._reading_form(source.schema(self._writer_id))
        self._writer_schemas: dict[int, dict[str, Any]] = {self._writer_id: self._schema}
        self._header = _HEADER.pack(MAGIC_BYTE, self._writer_id)

    def _reading_form(self, schema: dict[str, Any]) -> dict[str, Any]:
        return schema if self._logical_types else fastavro.parse_schema(without_logical_types(schema))

    def _writer_schema(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._writer_schemas:
            self._writer_schemas[schema_id] = self._reading_form(self._source.schema(schema_id))
        return self._writer_schemas[schema_id]

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            fastavro.schemaless_writer(buffer, self._schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidRecord(f"record does not fit {self._schema['name']}: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Decode a framed message into a record shaped by this codec's schema."""
        if not data or len(data) < _HEADER.size or data[0] != MAGIC_BYTE:
            raise NotConfluentFramed("message does not start with the Confluent magic byte and schema id")
        _, schema_id = _HEADER.unpack_from(data)
        writer_schema = self._writer_schema(schema_id)
        payload = io.BytesIO(data)
        payload.seek(_HEADER.size)
        # The same schema on both sides needs no resolution step.
        reader_schema = None if writer_schema is self._schema else self._schema
        try:
            record = fastavro.schemaless_reader(payload, writer_schema, reader_schema)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise self._undecodable(data, schema_id, exc) from exc
        if payload.tell() != len(data):
            raise InvalidAvro(f"{len(data) - payload.tell()} trailing bytes after the Avro record")
        return record

    def _undecodable(self, data: bytes, schema_id: int, exc: Exception) -> SchemaError:
        """Why a body did not decode: a value its logical type cannot hold (an empty event_id, a timestamp past
        the year 9999) when the same bytes read fine without logical types; otherwise invalid Avro.

        The bytes only carry a string and a long: a producer that skipped its logical types can send any, and
        such an event deserves the reason the stream gives the same mistake in range (``missing_field``,
        ``invalid_timestamp``), not "invalid Avro".
        """
        invalid = InvalidAvro(f"cannot decode Avro body with schema id {schema_id}: {exc!r}")
        if not self._logical_types or not isinstance(exc, (ValueError, OverflowError)) or isinstance(
                exc, UnicodeDecodeError):
            return invalid
        schema = self._source.schema(schema_id)
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(body, fastavro.parse_schema(without_logical_types(schema)), None)
        except Exception:  # not even the plain layout reads: the bytes are at fault
            return invalid
        if body.tell() != len(data) or not isinstance(record, dict):
            return invalid
        for field in schema.get("fields", ()):
            logical = field["type"].get("logicalType") if isinstance(field["type"], dict) else None
            name, value = field["name"], record.get(field["name"])
            if logical == "uuid" and isinstance(value, str):
                if not value.strip():
                    return InvalidValue("missing_field", f"{name} is empty")
                try:
                    uuid.UUID(value)
                except ValueError:
                    return InvalidAvro(f"{name} {value[:100]!r} is not a UUID")
            elif logical == "timestamp-millis" and isinstance(value, int):
                try:
                    _EPOCH + timedelta(milliseconds=value)
                except OverflowError:
                    return InvalidValue(
                        "invalid_timestamp", f"{name} {value} ms since 1970 is outside the years 1 to 9999")
        return invalid


def schema_source(registry_url: str, subjects: dict[str, str]) -> SchemaSource:
    """The registry when a URL is configured, else the local catalog."""
    return RegistrySchemaSource(registry_url, subjects) if registry_url else LocalSchemaCatalog()
