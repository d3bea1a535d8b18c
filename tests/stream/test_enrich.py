"""One raw event in, one enriched event out: the fields the stream adds and the checks it makes."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from ievents.schemas import ENRICHED, RAW, AvroCodec, LocalSchemaCatalog
from ievents.stream.app import process_message
from ievents.stream.enrich import Rejected, enrich, validate
from ievents.stream.redact import REDACTED, redact_parameters

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def raw_event(**overrides):
    event = {
        "event_id": uuid.uuid4(),
        "account_id": "acct-0001",
        "integration": {"id": "rr-1", "name": "Referral Rock", "platform": "referralrock"},
        "occurred_at": NOW,
        "type": "conversion.created",
        "direction": "none",
        "status": "error",
        "message": "Duplicate email: jane.doe@example.com already referred",
        "result": None,
        "parameters": {"email": "jane.doe@example.com", "api_key": "sk_live_123"},
        "details": None,
    }
    return {**event, **overrides}


def test_enrich_adds_canonical_fields_and_provenance_and_keeps_what_was_reported():
    raw = raw_event()
    enriched = enrich(raw, partition=3, offset=42, processed_at=NOW)
    assert (enriched["type"], enriched["type_raw"]) == ("conversion", "conversion.created")
    assert (enriched["status"], enriched["status_raw"]) == ("failure", "error")
    assert enriched["message"] == raw["message"]
    assert (enriched["source_partition"], enriched["source_offset"], enriched["processed_at"]) == (3, 42, NOW)
    assert enriched["parameters"] == {"email": "jane.doe@example.com", "api_key": REDACTED}
    assert enriched["redacted_parameters"] == ["api_key"]
    AvroCodec(LocalSchemaCatalog(), ENRICHED).encode(enriched)  # fits the enriched schema


@pytest.mark.parametrize(
    ("parameters", "redacted"),
    [
        ({}, []),
        ({"email": "a@b.c", "sku": "W-1"}, []),
        ({"password": "p", "Authorization": "Bearer x", "session_cookie": "c", "email": "a@b.c"},
         ["Authorization", "password", "session_cookie"]),
        ({"client_secret": "s", "access_token": "t", "API-Key": "k"}, ["API-Key", "access_token", "client_secret"]),
    ],
)
def test_redact_parameters(parameters, redacted):
    cleaned, names = redact_parameters(parameters)
    assert names == redacted
    assert all(cleaned[key] == REDACTED for key in redacted)
    assert {k: v for k, v in cleaned.items() if k not in redacted} == {k: v for k, v in parameters.items() if k not in redacted}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"account_id": " "}, "missing_field"),
        ({"integration": {"id": "", "name": "x", "platform": "y"}}, "missing_field"),
        ({}, None),
    ],
)
def test_validate(overrides, reason):
    rejected = validate(raw_event(**overrides))
    assert (rejected.reason if rejected else None) == reason


def test_process_message_rejects_undecodable_bytes_with_the_codec_reason():
    catalog = LocalSchemaCatalog()
    outcome = process_message(
        b"not avro", partition=0, offset=0, processed_at=NOW,
        raw_codec=AvroCodec(catalog, RAW), enriched_codec=AvroCodec(catalog, ENRICHED),
    )
    assert outcome == Rejected("not_confluent_framed", "message does not start with the Confluent magic byte and schema id")
