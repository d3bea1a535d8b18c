"""One raw event in, one enriched event out: the fields the stream adds and the checks it makes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ievents.schemas import ENRICHED, RAW, AvroCodec, LocalSchemaCatalog
from ievents.settings import Settings
from ievents.stream.app import failure_ratio, process_message
from ievents.stream.enrich import Rejected, enrich, fill_integration, validate
from ievents.stream.redact import REDACTED

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def raw_event(**overrides):
    event = {
        "event_id": uuid.uuid4(),
        "account_id": "acct-0001",
        "integration": {"id": "ref-api", "name": "Referral API", "platform": "REST API v2"},
        "occurred_at": NOW,
        "type": "conversion.created",
        "direction": "none",
        "status": "error",
        "message": "Duplicate email: jane.doe@example.com already referred",
        "result": None,
        "parameters": {"email": "jane.doe@example.com", "api_key": "sk_live_123"},
        "details": '{"referral": {"name": "Jane"}, "auth": {"token": "t0k"}}',
    }
    return {**event, **overrides}


def test_enrich_adds_canonical_fields_and_provenance_and_keeps_what_was_reported():
    raw = raw_event()
    enriched = enrich(raw, partition=3, offset=42, processed_at=NOW)
    assert (enriched["type"], enriched["type_raw"]) == ("conversion", "conversion.created")
    assert (enriched["status"], enriched["status_raw"]) == ("failure", "error")
    assert enriched["message"] == raw["message"]
    assert "jane.doe@example.com" not in enriched["message_template"]
    assert enriched["error_category"] == "duplicate"
    assert len(enriched["error_fingerprint"]) > 0
    assert (enriched["source_partition"], enriched["source_offset"], enriched["processed_at"]) == (3, 42, NOW)
    assert enriched["parameters"] == {"email": "jane.doe@example.com", "api_key": REDACTED}
    assert enriched["redacted_parameters"] == ["api_key", "details.auth"]
    assert enriched["product_family"] == "referral"
    AvroCodec(LocalSchemaCatalog(), ENRICHED).encode(enriched)  # fits the enriched schema


def test_messages_that_differ_only_in_their_variables_share_a_template_and_fingerprint():
    first = enrich(raw_event(), partition=0, offset=0, processed_at=NOW)
    second = enrich(raw_event(message="Duplicate email: bob@shop.test already referred"), partition=0, offset=1,
                    processed_at=NOW)
    assert first["message_template"] == second["message_template"]
    assert first["error_fingerprint"] == second["error_fingerprint"]


def test_a_success_has_a_template_but_no_error_category():
    enriched = enrich(raw_event(status="ok", message="Order #1042 synced"), partition=0, offset=0, processed_at=NOW)
    assert enriched["status"] == "success"
    assert enriched["error_category"] == ""
    assert enriched["message_template"]


@pytest.mark.parametrize(
    ("integration", "direction", "canonical_type", "expected"),
    [
        # Known integration: blanks filled from the catalog, the event's own values kept.
        ({"id": "hub-shopify", "name": "", "platform": ""}, "none", "order",
         ({"id": "hub-shopify", "name": "Shopify", "platform": "Shopify"}, "pull", "commerce")),
        ({"id": "hub-shopify", "name": "My Shop", "platform": "Shopify"}, "push", "product",
         ({"id": "hub-shopify", "name": "My Shop", "platform": "Shopify"}, "push", "commerce")),
        # Unknown integration: passes through; the family comes from the type.
        ({"id": "acme-crm", "name": "Acme", "platform": "Acme"}, "none", "customer",
         ({"id": "acme-crm", "name": "Acme", "platform": "Acme"}, "none", "commerce")),
        ({"id": "acme-crm", "name": "Acme", "platform": "Acme"}, "none", "other",
         ({"id": "acme-crm", "name": "Acme", "platform": "Acme"}, "none", "")),
    ],
)
def test_fill_integration(integration, direction, canonical_type, expected):
    assert fill_integration(integration, direction, canonical_type) == expected


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"account_id": " "}, "missing_field"),
        ({"integration": {"id": "", "name": "x", "platform": "y"}}, "missing_field"),
        ({"occurred_at": datetime(1999, 12, 31, tzinfo=timezone.utc)}, "invalid_timestamp"),
        ({"occurred_at": NOW + 2 * DAY}, "invalid_timestamp"),
        ({"occurred_at": NOW + DAY / 2}, None),
        ({"occurred_at": datetime(2000, 1, 1, tzinfo=timezone.utc)}, None),
        ({}, None),
    ],
)
def test_validate(overrides, reason):
    rejected = validate(raw_event(**overrides), now=NOW, max_future=DAY)
    assert (rejected.reason if rejected else None) == reason


def outcome_of(value: bytes, **settings):
    catalog = LocalSchemaCatalog()
    return process_message(
        value, partition=0, offset=0, processed_at=NOW, settings=Settings(**settings),
        raw_codec=AvroCodec(catalog, RAW), enriched_codec=AvroCodec(catalog, ENRICHED),
    )


def test_process_message_rejects_undecodable_bytes_with_the_codec_reason():
    assert outcome_of(b"not avro") == Rejected(
        "not_confluent_framed", "message does not start with the Confluent magic byte and schema id")


def test_process_message_rejects_oversized_payloads_before_decoding():
    value = AvroCodec(LocalSchemaCatalog(), RAW).encode(raw_event(message="x" * 5000))
    assert outcome_of(value, stream_max_message_bytes=4096).reason == "oversized"
    value_out, enriched = outcome_of(value, stream_max_message_bytes=10_000)
    assert enriched["message"] == "x" * 5000


@pytest.mark.parametrize(
    ("counts", "ratio"),
    [({}, 0.0), ({"success": 3}, 0.0), ({"failure": 1, "success": 3}, 0.25), ({"failure": 2, "info": 0}, 1.0)],
)
def test_failure_ratio(counts, ratio):
    assert failure_ratio(counts) == ratio
