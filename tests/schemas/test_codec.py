"""The Confluent-framed Avro codec: round trip, schema evolution, typed errors on bad bytes."""

from __future__ import annotations

import json
import struct
import uuid
from datetime import datetime, timezone

import fastavro
import pytest

from ievents.schemas import (
    RAW,
    AvroCodec,
    InvalidAvro,
    InvalidRecord,
    LocalSchemaCatalog,
    NotConfluentFramed,
    UnknownSchemaId,
)
from ievents.schemas.codec import SCHEMA_DIR


def raw_event(**overrides):
    event = {
        "event_id": str(uuid.uuid4()),
        "account_id": "acct-0001",
        "integration": {"id": "shopify-1", "name": "Shopify", "platform": "shopify"},
        "occurred_at": datetime(2026, 11, 27, 10, 15, 0, 123000, tzinfo=timezone.utc),
        "type": "orders/create",
        "direction": "pull",
        "status": "error",
        "message": "Order #1042 could not be synced: SKU 'WIDGET-77' not found",
        "result": None,
        "parameters": {"order_number": "1042", "email": "ann@example.com"},
        "details": json.dumps({"attempt": 2}),
    }
    return {**event, **overrides}


class CatalogWithNewerRaw(LocalSchemaCatalog):
    """The local catalog plus a v2 raw schema (id 99) that adds an optional field.

    ``writes_newer`` picks the side: a producer upgraded to v2, or a consumer still built for v1.
    """

    def __init__(self, writes_newer: bool) -> None:
        super().__init__()
        newer = json.loads((SCHEMA_DIR / "raw_event.avsc").read_text())
        newer["fields"].append({"name": "trace_id", "type": ["null", "string"], "default": None})
        self.newer = fastavro.parse_schema(newer)
        self.writes_newer = writes_newer

    def writer_schema_id(self, kind: str) -> int:
        return 99 if kind == RAW and self.writes_newer else super().writer_schema_id(kind)

    def schema(self, schema_id: int):
        return self.newer if schema_id == 99 else super().schema(schema_id)


def test_round_trip_keeps_every_field():
    codec = AvroCodec(LocalSchemaCatalog(), RAW)
    event = raw_event()
    decoded = codec.decode(codec.encode(event))
    assert {**decoded, "event_id": str(decoded["event_id"])} == event


def test_the_wire_format_is_magic_byte_then_schema_id_then_avro():
    codec = AvroCodec(LocalSchemaCatalog(), RAW)
    data = codec.encode(raw_event())
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == LocalSchemaCatalog().writer_schema_id(RAW)


def test_a_newer_writer_with_an_added_optional_field_stays_readable_by_the_older_reader():
    newer_writer = AvroCodec(CatalogWithNewerRaw(writes_newer=True), RAW)
    older_reader = AvroCodec(CatalogWithNewerRaw(writes_newer=False), RAW)
    event = raw_event()
    data = newer_writer.encode({**event, "trace_id": "abc"})
    decoded = older_reader.decode(data)
    assert "trace_id" not in decoded
    assert decoded["message"] == event["message"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotConfluentFramed),
        (None, NotConfluentFramed),
        (b"hello world", NotConfluentFramed),
        (b"\x00\x00\x00", NotConfluentFramed),
        (b"\x00\x00\x00\x30\x39" + b"\x02", UnknownSchemaId),
        (b"\x00\x00\x00\x00\x01" + b"\xff" * 3, InvalidAvro),
    ],
)
def test_bad_bytes_raise_a_typed_error_with_a_reason(data, error):
    with pytest.raises(error) as raised:
        AvroCodec(LocalSchemaCatalog(), RAW).decode(data)
    assert raised.value.reason


def test_truncated_and_trailing_bytes_are_invalid_avro():
    codec = AvroCodec(LocalSchemaCatalog(), RAW)
    data = codec.encode(raw_event())
    with pytest.raises(InvalidAvro):
        codec.decode(data[:-3])
    with pytest.raises(InvalidAvro):
        codec.decode(data + b"\x00")


@pytest.mark.parametrize("broken", [{"direction": "sideways"}, {"occurred_at": "yesterday"}, {"parameters": {"a": 1}}])
def test_a_record_that_does_not_fit_the_schema_is_refused_before_sending(broken):
    with pytest.raises(InvalidRecord):
        AvroCodec(LocalSchemaCatalog(), RAW).encode(raw_event(**broken))


def test_without_logical_types_uuids_stay_text_and_timestamps_stay_epoch_millis():
    event = raw_event()
    data = AvroCodec(LocalSchemaCatalog(), RAW).encode(event)
    decoded = AvroCodec(LocalSchemaCatalog(), RAW, logical_types=False).decode(data)
    assert decoded["event_id"] == event["event_id"]
    assert decoded["occurred_at"] == int(event["occurred_at"].timestamp() * 1000)
