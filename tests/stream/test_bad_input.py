"""Bad input never stops the pipeline: every message is stored correctly or dead-lettered with its reason.

Three levels, one corpus:

- ``process_message`` (the stream's whole decision, a pure function) over
  property-based inputs (hypothesis, derandomized so CI is stable) and a fixed
  corpus of named absurd cases: garbage bytes, Confluent-framed garbage,
  truncated Avro, wrong and newer schema ids, valid Avro with absurd values
  (blank ids, ~1 MB messages, 10,000 parameters, control characters, invalid
  UTF-8 spliced into strings, timestamps at the limits). It never raises: it
  returns an enriched event that decodes back and fits the enriched schema, or
  a ``Rejected`` whose reason is one of the DLQ reasons.
- the sink's ``to_row`` plus a real chDB insert of what the stream lets through.
- a real broker, a real Faust worker process and the real sink, fed a few
  hundred bad inputs interleaved with good events: every good event is stored,
  every bad one is in the DLQ with its reason header, and the worker is alive.

How many inputs each category tried is printed (``pytest -s``) when the module
finishes and written to ``/tmp/bad-input-figures.md``.
"""

from __future__ import annotations

import io
import json
import random
import struct
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from helpers import read_topic, wait_for
from ievents.producers.simulator import simulate_events
from ievents.runtime import SinkService, start_stream_worker, stop_process
from ievents.schemas import DLQ_REASON_HEADER, ENRICHED, RAW, AvroCodec, LocalSchemaCatalog
from ievents.schemas.codec import SCHEMA_DIR, load_schema, without_logical_types
from ievents.schemas.dead_letter import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    ORIGINAL_KEY_SIZE_HEADER,
    ORIGINAL_SIZE_HEADER,
    dead_letter_record,
)
from ievents.settings import Settings
from ievents.sink.sink import COLUMNS, TABLE, to_row
from ievents.stream.app import process_message
from ievents.stream.enrich import EARLIEST_EVENT, Rejected
from ievents.stream.messages import MAX_TEMPLATE_CHARS
from ievents.stream.redact import REDACTED

# The reasons the stream puts in the ievents-dlq-reason header (README, "The stream stage").
STREAM_REASONS = frozenset({
    "not_confluent_framed", "unknown_schema_id", "invalid_avro", "missing_field", "invalid_timestamp", "oversized",
    "processing_error",
})
STORED = "stored"
CANONICAL_TYPES = frozenset({
    "one_click_access", "api_call", "integration_script", "conversion", "order", "customer", "product", "other",
})

SETTINGS = Settings()
LIMIT = SETTINGS.stream_max_message_bytes
MAX_FUTURE = timedelta(seconds=SETTINGS.stream_max_future_seconds)
# Whole milliseconds: the enriched event's processed_at must survive the Avro round trip unchanged.
NOW = datetime.now(timezone.utc).replace(microsecond=0)
NOW_MS = int(NOW.timestamp() * 1000)
CATALOG = LocalSchemaCatalog()
RAW_CODEC, ENRICHED_CODEC = AvroCodec(CATALOG, RAW), AvroCodec(CATALOG, ENRICHED)
SINK_CODEC = AvroCodec(CATALOG, ENRICHED, logical_types=False)
RAW_ID = CATALOG.writer_schema_id(RAW)
ENRICHED_ID = CATALOG.writer_schema_id(ENRICHED)
RAW_JSON = json.loads((SCHEMA_DIR / "raw_event.avsc").read_text())
# The raw layout without logical types: any string as event_id, any long as occurred_at (what a careless
# or hostile producer can put on the wire; the schema's logical types are not enforced by the bytes).
PLAIN_RAW = fastavro.parse_schema(without_logical_types(RAW_JSON))
ENRICHED_SCHEMA = load_schema("enriched_event.avsc")
ENRICHED_FIELDS = [field["name"] for field in ENRICHED_SCHEMA["fields"]]
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
MS_2000 = int(EARLIEST_EVENT.timestamp() * 1000)
# The table keeps retention_days (0: forever); the stream must not accept what the table's TTL would drop unseen.
RETENTION = timedelta(days=SETTINGS.retention_days) if SETTINGS.retention_days else None
OLDEST = max(EARLIEST_EVENT, NOW - RETENTION) if RETENTION else EARLIEST_EVENT
OLDEST_MS = int(OLDEST.timestamp() * 1000)
MS_YEAR_9999_END = 253402300799999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds

# Inputs tried, by category; outcomes by category and reason (or "stored"); exceptions (must stay 0).
TRIED: Counter[str] = Counter()
OUTCOMES: defaultdict[str, Counter[str]] = defaultdict(Counter)
CRASHES: Counter[str] = Counter()
FIGURES_FILE = Path("/tmp/bad-input-figures.md")

# derandomize: the same examples on every run (CI stays stable); database=None: nothing written in the repo.
PROPERTY = dict(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                       HealthCheck.filter_too_much])


# ---------------------------------------------------------------- building inputs


def raw_record(**overrides) -> dict:
    """A valid raw event in the plain (no logical types) form: event_id a string, occurred_at epoch millis."""
    record = {
        "event_id": str(uuid.uuid4()),
        "account_id": "acct-bad-input",
        "integration": {"id": "hub-shopify", "name": "Shopify", "platform": "shopify"},
        "occurred_at": NOW_MS - 60_000,
        "type": "orders/create",
        "direction": "pull",
        "status": "error",
        "message": "Order #1042 could not be synced: SKU 'WIDGET-77' not found",
        "result": None,
        "parameters": {"order_number": "1042", "email": "ann@example.com"},
        "details": json.dumps({"attempt": 2}),
    }
    return {**record, **overrides}


def framed(record: dict, schema_id: int = RAW_ID, schema=PLAIN_RAW) -> bytes:
    """Confluent wire format: magic byte 0, the 4-byte schema id, the Avro body written with ``schema``."""
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def splice(value: bytes, marker: bytes, replacement: bytes) -> bytes:
    """``value`` with its one occurrence of ``marker`` replaced by as many raw bytes (Avro lengths stay right)."""
    assert len(marker) == len(replacement) and value.count(marker) == 1
    return value.replace(marker, replacement)


def newer_raw_json(extra_field: dict | None = None) -> dict:
    """Version 2 of the raw schema: one more optional field (a BACKWARD-compatible change)."""
    newer = json.loads(json.dumps(RAW_JSON))
    newer["fields"].append(extra_field or {"name": "trace_id", "type": ["null", "string"], "default": None})
    return newer


NEWER_RAW = fastavro.parse_schema(without_logical_types(newer_raw_json()))
NEWER_ID = 3  # not in catalog.json


def utf8_ok(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------- the oracle and the checks


def expected_outcome(record: dict, value: bytes) -> str:
    """What the stream must do with a well-formed Avro body written with the plain raw schema.

    The order is the stream's: size, then the values the Avro logical types cannot hold (checked while
    decoding, in field order), then the checks the schema cannot express (blank ids, timestamps: not before
    2000 nor older than the retention, not further ahead than the future limit).
    """
    if len(value) > LIMIT:
        return "oversized"
    event_id = record["event_id"]
    if not event_id.strip():
        return "missing_field"
    try:
        uuid.UUID(event_id)
    except ValueError:
        return "invalid_avro"
    if not MS_YEAR_9999_END >= record["occurred_at"] >= -62135596800000:  # outside datetime's years 1..9999
        return "invalid_timestamp"
    if not record["account_id"].strip() or not record["integration"]["id"].strip():
        return "missing_field"
    occurred = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=record["occurred_at"])
    if occurred < OLDEST or occurred > NOW + MAX_FUTURE:
        return "invalid_timestamp"
    return STORED


def run(category: str, value: bytes | None, *, raw_codec: AvroCodec = RAW_CODEC) -> str:
    """``process_message`` on one input, checked; returns its outcome (``stored`` or the DLQ reason)."""
    TRIED[category] += 1
    try:
        outcome = process_message(
            value, partition=1, offset=7, processed_at=NOW, settings=SETTINGS,
            raw_codec=raw_codec, enriched_codec=ENRICHED_CODEC,
        )
    except Exception:
        CRASHES[category] += 1
        raise
    if isinstance(outcome, Rejected):
        assert outcome.reason in STREAM_REASONS, outcome
        assert isinstance(outcome.detail, str) and outcome.detail
        OUTCOMES[category][outcome.reason] += 1
        return outcome.reason
    encoded, enriched = outcome
    assert_is_a_good_enriched_event(encoded, enriched)
    OUTCOMES[category][STORED] += 1
    return STORED


def assert_is_a_good_enriched_event(encoded: bytes, enriched: dict) -> None:
    """Decodes back to itself, fits the enriched schema and keeps the stream's promises."""
    assert isinstance(encoded, bytes) and encoded[:5] == struct.pack(">bI", 0, ENRICHED_ID)
    assert fastavro.validation.validate(enriched, ENRICHED_SCHEMA, raise_errors=True)
    decoded = ENRICHED_CODEC.decode(encoded)
    assert decoded == {field: enriched[field] for field in ENRICHED_FIELDS}
    assert decoded["account_id"].strip() and decoded["integration"]["id"].strip()
    # The enriched topic can carry it: value and key (the account id) within the message limit.
    assert len(encoded) + len(decoded["account_id"].encode()) <= LIMIT
    assert OLDEST <= decoded["occurred_at"] <= NOW + MAX_FUTURE
    assert decoded["status"] in ("info", "success", "failure")
    assert decoded["type"] in CANONICAL_TYPES
    assert len(decoded["message_template"]) <= MAX_TEMPLATE_CHARS
    for name in decoded["redacted_parameters"]:
        if not name.startswith("details"):
            assert REDACTED in decoded["parameters"][name]
    # The sink turns it into a table row without complaint.
    assert len(to_row(SINK_CODEC.decode(encoded))) == len(COLUMNS)


# ---------------------------------------------------------------- strategies

# Any Unicode scalar value (no lone surrogates: they cannot be UTF-8, see the invalid-UTF-8 tests), control
# characters included, plus hand-picked troublemakers.
NASTY_STRINGS = [
    "", " ", "\t\n\r", "\x00", "\x00" * 5, "\x1b[31mred\x1b[0m", "\u202eevil", "\ufeffbom", "\u200b", "\u2028\u2029",
    "💥" * 3, "Ω≈ç√", "'; DROP TABLE integration_events; --", "{param:String}", "%s%s%n", "\\", '"', "null",
    "NaN", "[]", "{}", "Bearer abcdefghijklmnop", "4111 1111 1111 1111",
]
text = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(NASTY_STRINGS),
    st.builds(lambda piece, times: piece * times, st.sampled_from(["x", "é", "💥", "\x00", " "]),
              st.integers(0, 3000)),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.one_of(text, st.sampled_from(["password", "token", "Authorization", "card_number", "api_key"])),
        children, max_size=4),
    max_leaves=12,
)
details = st.one_of(st.none(), text, json_values.map(lambda value: json.dumps(value, ensure_ascii=False)),
                    st.builds(lambda depth: "[" * depth + "]" * depth, st.integers(900, 3000)))


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of ``choices``, each drawn about ``weight`` times in (sum of weights) (``one_of`` does not split evenly)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda index: pool[index])


# Weighted towards values that pass the early checks, so that most examples reach enrichment and encoding.
timestamps = weighted(
    (6, st.integers(OLDEST_MS, NOW_MS + int(MAX_FUTURE.total_seconds() * 1000))),
    (1, st.integers(MS_2000, OLDEST_MS)),
    (1, st.sampled_from([0, -1, LONG_MIN, LONG_MAX, MS_2000 - 1, MS_2000, MS_YEAR_9999_END, MS_YEAR_9999_END + 1,
                         NOW_MS, NOW_MS + int(MAX_FUTURE.total_seconds() * 1000) + 1])),
    (1, st.integers(LONG_MIN, LONG_MAX)),
)
identifiers = weighted((4, st.sampled_from(["acct-1", "hub-shopify", "ref-api", "x"])), (1, text))
event_ids = weighted((6, st.uuids().map(str)), (1, st.uuids().map(lambda u: str(u).upper())), (1, text))
parameter_maps = st.one_of(
    st.dictionaries(st.one_of(text, st.sampled_from(["password", "api_key", "note", "token"])), text, max_size=12),
    st.builds(lambda n, value: {f"param_{i:05d}": value for i in range(n)}, st.integers(0, 10_000),
              st.sampled_from(["", "v", "4111 1111 1111 1111"])),
)
records = st.fixed_dictionaries({
    "event_id": event_ids,
    "account_id": identifiers,
    "integration": st.fixed_dictionaries({"id": identifiers, "name": text, "platform": text}),
    "occurred_at": timestamps,
    "type": text,
    "direction": st.sampled_from(["none", "pull", "push"]),
    "status": st.one_of(text, st.sampled_from(["success", "error", "failed", "200", "HTTP 503", "info"])),
    "message": st.one_of(st.none(), text, details),
    "result": st.one_of(st.none(), text),
    "parameters": parameter_maps,
    "details": details,
})


# ---------------------------------------------------------------- property-based: process_message never raises


@hypothesis_settings(max_examples=2000, **PROPERTY)
@given(st.binary(max_size=2000))
def test_garbage_bytes(value):
    outcome = run("garbage bytes", value)
    if len(value) < 5 or value[0] != 0:
        assert outcome == "not_confluent_framed"
    if outcome == STORED:  # only where the bytes happen to be a raw (or enriched, which resolves to raw) event
        assert struct.unpack(">bI", value[:5]) in ((0, RAW_ID), (0, ENRICHED_ID))


@hypothesis_settings(max_examples=2000, **PROPERTY)
@given(st.sampled_from([RAW_ID, ENRICHED_ID]), st.binary(max_size=3000))
def test_confluent_framed_garbage(schema_id, body):
    """A right header in front of random bytes: the Avro decoder itself is attacked."""
    run("framed garbage", struct.pack(">bI", 0, schema_id) + body)


@hypothesis_settings(max_examples=1500, **PROPERTY)
@given(records)
def test_valid_avro_with_absurd_values(record):
    value = framed(record)
    assert run("absurd values (generated)", value) == expected_outcome(record, value)


@hypothesis_settings(max_examples=800, **PROPERTY)
@given(st.sampled_from(["account_id", "integration.id", "integration.name", "type", "status", "message", "result",
                        "parameter key", "parameter value", "details", "event_id"]),
       st.binary(min_size=1, max_size=12))
def test_invalid_utf8_inside_a_string(field, replacement):
    """Avro strings are UTF-8: raw bytes spliced into one string field, the Avro lengths kept right."""
    marker = "\x07" * len(replacement)
    record = raw_record()
    if field == "parameter key":
        record["parameters"] = {marker: "v"}
    elif field == "parameter value":
        record["parameters"] = {"k": marker}
    elif field == "event_id":
        record["event_id"] = marker
    elif field.startswith("integration."):
        record["integration"] = {**record["integration"], field.split(".")[1]: marker}
    else:
        record[field] = marker
    value = splice(framed(record), marker.encode(), replacement)
    outcome = run("invalid UTF-8 in strings", value)
    if not utf8_ok(replacement):
        assert outcome == "invalid_avro"


@hypothesis_settings(max_examples=500, **PROPERTY)
@given(st.integers(0, 2**32 - 1).filter(lambda schema_id: schema_id not in (RAW_ID, ENRICHED_ID)),
       st.sampled_from(["raw", "newer"]))
def test_schema_ids_nobody_registered(schema_id, writer):
    record = raw_record()
    value = framed(record, schema_id, PLAIN_RAW if writer == "raw" else NEWER_RAW)
    assert run("unknown schema id", value) == "unknown_schema_id"


@hypothesis_settings(max_examples=300, **PROPERTY)
@given(records, st.data())
def test_truncated_at_random_lengths(record, data):
    value = framed(record)
    cut = data.draw(st.integers(0, len(value) - 1))
    assert run("truncated (random cut)", value[:cut]) == ("not_confluent_framed" if cut < 5 else "invalid_avro")


# ---------------------------------------------------------------- fixed corpus


def truncation_corpus() -> list[bytes]:
    """Valid events of every shape the simulator makes, small enough to cut at every length."""
    events = [e for e in simulate_events(40, seed=5)][:12]
    return [RAW_CODEC.encode(event) for event in events] + [
        framed(raw_record(message=None, details=None, parameters={})),
        framed(raw_record(parameters={"a" * 3: "b" * 200, "password": "hunter2"}, result="ok")),
    ]


def test_truncated_at_every_length():
    for value in truncation_corpus():
        assert run("truncated (every length)", value) == STORED
        for cut in range(len(value)):
            assert run("truncated (every length)", value[:cut]) == ("not_confluent_framed" if cut < 5 else "invalid_avro")


def avro_long(value: int) -> bytes:
    """Avro's zig-zag varint."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte, zigzag = zigzag & 0x7F, zigzag >> 7
        out.append(byte | (0x80 if zigzag else 0))
        if not zigzag:
            return bytes(out)


def fixed_corpus() -> list[tuple[str, bytes | None, str]]:
    """(name, value, expected outcome): named absurd inputs; each one stored or rejected for a known reason."""
    cases: list[tuple[str, bytes | None, str]] = []

    def event(name: str, expected: str, **overrides) -> None:
        cases.append((name, framed(raw_record(**overrides)), expected))

    # framing
    cases += [
        ("tombstone (no value)", None, "not_confluent_framed"),
        ("empty value", b"", "not_confluent_framed"),
        ("magic byte only", b"\x00", "not_confluent_framed"),
        ("header cut short", b"\x00\x00\x00\x01", "not_confluent_framed"),
        ("header only", b"\x00\x00\x00\x00\x01", "invalid_avro"),
        ("JSON instead of Avro", json.dumps({"event_id": str(uuid.uuid4())}).encode(), "not_confluent_framed"),
        ("magic byte 1", b"\x01" + framed(raw_record())[1:], "not_confluent_framed"),
        ("schema id 0", b"\x00\x00\x00\x00\x00" + framed(raw_record())[5:], "unknown_schema_id"),
        ("schema id 2^32-1", b"\x00\xff\xff\xff\xff" + framed(raw_record())[5:], "unknown_schema_id"),
        ("newer schema version, unknown id", framed(raw_record(trace_id="t-1"), NEWER_ID, NEWER_RAW),
         "unknown_schema_id"),
        ("trailing bytes", framed(raw_record()) + b"\x00", "invalid_avro"),
    ]
    # bodies that are not Avro of the schema
    good = framed(raw_record(event_id="00000000-0000-4000-8000-000000000000"))
    cases += [
        ("negative string length", good[:5] + avro_long(-5) + good[6:], "invalid_avro"),
        ("string length 2^62", good[:5] + avro_long(2**62) + good[6:], "invalid_avro"),
        ("varint longer than 10 bytes", good[:5] + b"\xff" * 12 + b"\x01", "invalid_avro"),
        ("direction index 7", framed(raw_record(direction="push")).replace(avro_long(2) + avro_long(len("error")),
                                                                               avro_long(7) + avro_long(len("error"))),
         "invalid_avro"),
    ]
    # blank and malformed identifiers
    event("empty event_id", "missing_field", event_id="")
    event("blank event_id", "missing_field", event_id="   ")
    event("event_id not a UUID", "invalid_avro", event_id="order-1042")
    event("event_id upper-case UUID", STORED, event_id=str(uuid.uuid4()).upper())
    event("event_id braced UUID", STORED, event_id="{" + str(uuid.uuid4()) + "}")
    event("empty account_id", "missing_field", account_id="")
    event("whitespace account_id", "missing_field", account_id=" \t\n\u3000")
    event("empty integration id", "missing_field", integration={"id": "", "name": "", "platform": ""})
    event("everything else empty", STORED, integration={"id": "x", "name": "", "platform": ""}, type="", status="",
          message="", result="", parameters={"": ""}, details="")
    # timestamps at the limits (epoch milliseconds)
    future = NOW_MS + int(MAX_FUTURE.total_seconds() * 1000)
    for name, ms, expected in [
        ("occurred_at 0 (1970)", 0, "invalid_timestamp"),
        ("occurred_at -1", -1, "invalid_timestamp"),
        ("occurred_at min long", LONG_MIN, "invalid_timestamp"),
        ("occurred_at max long", LONG_MAX, "invalid_timestamp"),
        ("occurred_at year 9999", MS_YEAR_9999_END, "invalid_timestamp"),
        ("occurred_at past year 9999", MS_YEAR_9999_END + 1, "invalid_timestamp"),
        ("occurred_at before year 1", -62135596800001, "invalid_timestamp"),
        ("occurred_at 1999-12-31T23:59:59.999", MS_2000 - 1, "invalid_timestamp"),
        ("occurred_at 2000-01-01T00:00:00.000", MS_2000, "invalid_timestamp" if RETENTION else STORED),
        ("occurred_at a day inside the retention", OLDEST_MS + 86_400_000, STORED),
        ("occurred_at a day beyond the retention", OLDEST_MS - 86_400_000, "invalid_timestamp"),
        ("occurred_at an hour short of the future limit", future - 3_600_000, STORED),
        ("occurred_at an hour past the future limit", future + 3_600_000, "invalid_timestamp"),
    ]:
        event(name, expected, occurred_at=ms)
    # control characters and odd Unicode everywhere
    weird = "\x00\x01\x02\x07\x08\x0b\x0c\x1b[2J\x7f\u0085\u2028\u202e\ufeff\U0001f4a5"
    event("control characters in every string", STORED, account_id=f"acct{weird}", type=weird, status=weird,
          integration={"id": f"int{weird}", "name": weird, "platform": weird}, message=weird, result=weird,
          parameters={weird: weird, f"password{weird}": weird}, details=weird)
    event("NUL-only strings", STORED, account_id="\x00", integration={"id": "\x00", "name": "\x00", "platform": "\x00"},
          message="\x00" * 100, parameters={"\x00": "\x00"})
    # size
    event("10,000 parameters", STORED, parameters={f"param_{i:05d}": f"value {i}" for i in range(10_000)})
    event("10,000 secret-named parameters", STORED, parameters={f"password_{i:05d}": "x" for i in range(10_000)})
    event("one 100 KB parameter value", STORED, parameters={"blob": "b" * 100_000})
    header = len(framed(raw_record(message="")))
    event("message of 990 KB (its enriched event fits too)", STORED, message="m" * 990_000)
    # Enrichment adds a template and more: an event at the limit outgrows it, and Kafka would refuse to carry it.
    event("message just under 1 MB (its enriched event is over)", "oversized", message="m" * (LIMIT - header - 3))
    event("message just over 1 MB", "oversized", message="m" * (LIMIT - header + 10))
    event("3 MB message", "oversized", message="m" * 3_000_000)
    event("details of 300 KB JSON with secrets", STORED,
          details=json.dumps({"token": "t", "rows": [{"password": "p", "n": i} for i in range(10_000)]}))
    # Every redacted path is named in redacted_parameters: 920 KB in, 2 MB enriched.
    event("details of 920 KB JSON with 30,000 secrets (enriched 2 MB)", "oversized",
          details=json.dumps({"token": "t", "rows": [{"password": "p", "n": i} for i in range(30_000)]}))
    event("account_id of 600 KB beside a 450 KB message (key + value over 1 MB)", "oversized",
          account_id="a" * 600_000, message="m" * 399_000)
    # JSON that breaks naive parsers
    event("message: JSON nested 5,000 deep", STORED, message="[" * 5000 + "]" * 5000)
    event("message: JSON with an escaped lone surrogate", STORED, message='{"error": "bad \\ud800 char"}')
    event("details: JSON nested 5,000 deep under a secret key", STORED,
          details='{"token": ' + "[" * 5000 + "]" * 5000 + "}")
    event("details: escaped lone surrogate next to a secret", STORED, details='{"password": "x", "note": "\\udc00"}')
    event("details: integer of 5,000 digits next to a secret", STORED, details='{"password": "x", "n": ' + "9" * 5000 + "}")
    event("details: NaN and Infinity", STORED, details='{"token": NaN, "n": Infinity}')
    # invalid UTF-8 inside Avro strings (the length prefixes stay right)
    for name, field, raw_bytes in [
        ("invalid UTF-8: 0xFF in message", "message", b"\xff"),
        ("invalid UTF-8: overlong '/' in account_id", "account_id", b"\xc0\xaf"),
        ("invalid UTF-8: CESU surrogate in type", "type", b"\xed\xa0\x80"),
        ("invalid UTF-8: cut 4-byte char in status", "status", b"\xf0\x9f\x92"),
        ("invalid UTF-8: lone continuation in details", "details", b"\x80"),
    ]:
        marker = "\x07" * len(raw_bytes)
        cases.append((name, splice(framed(raw_record(**{field: marker})), marker.encode(), raw_bytes), "invalid_avro"))
    for name, raw_bytes in [("invalid UTF-8 in a parameter key", b"\xfe"), ("invalid UTF-8 in a parameter value", b"\xc3")]:
        marker = "\x07"
        parameters = {marker: "v"} if "key" in name else {"k": marker}
        cases.append((name, splice(framed(raw_record(parameters=parameters)), marker.encode(), raw_bytes),
                      "invalid_avro"))
    # an enriched event published to the raw topic: its status is an enum where the raw one is a string, so the
    # two schemas do not resolve (Avro schema resolution): invalid Avro for a raw reader
    enriched = process_message(framed(raw_record()), partition=0, offset=0, processed_at=NOW, settings=SETTINGS,
                               raw_codec=RAW_CODEC, enriched_codec=ENRICHED_CODEC)
    cases.append(("an enriched event on the raw topic", enriched[0], "invalid_avro"))
    return cases


FIXED_CORPUS = fixed_corpus()


@pytest.mark.parametrize(("name", "value", "expected"), FIXED_CORPUS, ids=[case[0] for case in FIXED_CORPUS])
def test_fixed_corpus(name, value, expected):
    assert run("fixed corpus", value) == expected


def test_secrets_survive_none_of_the_absurd_shapes():
    """The corpus's secrets (parameters and details) are masked whatever shape carried them."""
    cases = {
        "control chars": raw_record(parameters={"password\x00": "s3cr3t-ctrl"}),
        "10,000 secret parameters": raw_record(parameters={f"password_{i:05d}": f"s3cr3t-{i}" for i in range(10_000)}),
        "deep details": raw_record(details='{"token": "s3cr3t-deep", "x": ' + "[" * 5000 + "]" * 5000 + "}"),
        "surrogate details": raw_record(details='{"password": "s3cr3t-surrogate", "note": "\\udc00"}'),
        "huge integer details": raw_record(details='{"password": "s3cr3t-bigint", "n": ' + "9" * 5000 + "}"),
    }
    for name, record in cases.items():
        outcome = process_message(framed(record), partition=0, offset=0, processed_at=NOW, settings=SETTINGS,
                                  raw_codec=RAW_CODEC, enriched_codec=ENRICHED_CODEC)
        assert not isinstance(outcome, Rejected), (name, outcome)
        assert b"s3cr3t" not in outcome[0], name


# ---------------------------------------------------------------- schema evolution


def catalog_with_newer_raw(tmp_path: Path, newer: dict) -> LocalSchemaCatalog:
    """catalog.json as a release adding raw schema v2 (id 3) would ship it: the old entries plus the new one."""
    schema_file = tmp_path / "raw_event_v2.avsc"
    schema_file.write_text(json.dumps(newer))
    entries = json.loads((SCHEMA_DIR / "catalog.json").read_text())["schemas"]
    catalog = tmp_path / "catalog.json"
    # An absolute path: the catalog resolves file names against the schema folder, and a / path wins.
    catalog.write_text(json.dumps({"schemas": [*entries, {"id": NEWER_ID, "kind": "raw", "file": str(schema_file)}]}))
    load_schema.cache_clear()
    return LocalSchemaCatalog(catalog)


class KnowsNewerReadsOlder(LocalSchemaCatalog):
    """A worker still built for raw v1 whose schema source (a registry) already knows v2 (id 3)."""

    def schema(self, schema_id: int):
        return fastavro.parse_schema(newer_raw_json()) if schema_id == NEWER_ID else super().schema(schema_id)


def test_a_newer_schema_version_known_to_the_catalog_is_read_by_schema_resolution(tmp_path):
    catalog = catalog_with_newer_raw(tmp_path, newer_raw_json())
    upgraded = AvroCodec(catalog, RAW)  # reads with v2, the catalog's newest raw schema
    older_worker = AvroCodec(KnowsNewerReadsOlder(), RAW)  # reads with v1
    for codec in (upgraded, older_worker):
        for value in (framed(raw_record(trace_id="t-1"), NEWER_ID, NEWER_RAW), framed(raw_record(), RAW_ID)):
            assert run("newer schema version (known)", value, raw_codec=codec) == STORED


def test_a_newer_schema_version_that_breaks_compatibility_is_invalid_avro(tmp_path):
    """A "v2" that changed a field's type cannot be resolved to v1: the event is parked, the worker goes on."""
    broken = json.loads(json.dumps(RAW_JSON))
    broken["fields"] = [f if f["name"] != "status" else {"name": "status", "type": "int"} for f in broken["fields"]]
    catalog = catalog_with_newer_raw(tmp_path, newer_raw_json())

    class Incompatible(LocalSchemaCatalog):
        def schema(self, schema_id: int):
            return fastavro.parse_schema(broken) if schema_id == NEWER_ID else super().schema(schema_id)

    assert catalog.writer_schema_id(RAW) == NEWER_ID
    value = framed({**raw_record(), "status": 503}, NEWER_ID, fastavro.parse_schema(without_logical_types(broken)))
    assert run("newer schema version (incompatible)", value, raw_codec=AvroCodec(Incompatible(), RAW)) == "invalid_avro"


# ---------------------------------------------------------------- dead letters of huge messages


@pytest.mark.parametrize(("key", "value"), [
    (None, None), (b"acct-1", b"x"), (b"k" * 600_000, b"v" * 600_000), (b"k" * MAX_KEY_BYTES, b""),
    (b"", b"v" * (MAX_VALUE_BYTES + 1)),
])
def test_a_dead_letter_always_fits_where_its_message_did_not(key, value):
    """Key, value and headers of a dead letter stay under Kafka's default 1 MiB, whatever the original's sizes."""
    sent_key, sent_value, headers = dead_letter_record(key, value, "invalid_avro", "x" * 5000, topic="raw",
                                                       partition=0, offset=1)
    size = len(sent_key or b"") + len(sent_value or b"") + sum(len(k) + len(v) for k, v in headers.items())
    assert size < 1_000_000
    assert headers[DLQ_REASON_HEADER] == b"invalid_avro"
    assert sent_key == (key[:MAX_KEY_BYTES] if key is not None else None)
    assert sent_value == (value[:MAX_VALUE_BYTES] if value is not None else None)
    assert (ORIGINAL_KEY_SIZE_HEADER in headers) == (key is not None and len(key) > MAX_KEY_BYTES)
    assert (ORIGINAL_SIZE_HEADER in headers) == (value is not None and len(value) > MAX_VALUE_BYTES)


# ---------------------------------------------------------------- the sink: rows from absurd events, into chDB


@pytest.mark.integration
def test_the_sink_stores_every_absurd_event_the_stream_lets_through(clickhouse):
    """Enriched events the stream made from the corpus's absurd-but-valid inputs: to_row, one insert, read back."""
    sources = [value for _, value, expected in FIXED_CORPUS if expected == STORED]
    rng = random.Random(11)
    for _ in range(200):  # plus generated absurd events the stream accepted
        record = raw_record(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            account_id=rng.choice(["a", "\x00", "acct " * 50, "💥"]),
            message=rng.choice([None, "", "\x00\x1b", "é" * rng.randint(0, 20_000)]),
            parameters={rng.choice(["k", "\x00", "password", "é"]) + str(i): "v\x00" * rng.randint(0, 3)
                        for i in range(rng.randint(0, 300))},
            details=rng.choice([None, "", "{}", '{"token": "t"}', "\u2028"]),
            occurred_at=rng.choice([OLDEST_MS + 60_000, NOW_MS, NOW_MS + 3_600_000, rng.randint(OLDEST_MS, NOW_MS)]),
        )
        sources.append(framed(record))
    encoded = []
    for value in sources:
        outcome = process_message(value, partition=0, offset=len(encoded), processed_at=NOW, settings=SETTINGS,
                                  raw_codec=RAW_CODEC, enriched_codec=ENRICHED_CODEC)
        assert not isinstance(outcome, Rejected), outcome
        encoded.append(outcome[0])
    TRIED["sink rows (to_row + chDB insert)"] += len(encoded)

    events = [SINK_CODEC.decode(value) for value in encoded]  # exactly as the sink decodes them
    rows = [to_row(event) for event in events]
    assert all(len(row) == len(COLUMNS) for row in rows)
    clickhouse.insert(TABLE, [list(column) for column in zip(*rows)], column_names=COLUMNS, column_oriented=True)
    OUTCOMES["sink rows (to_row + chDB insert)"][STORED] += len(rows)

    stored = {
        row[0]: row[1:] for row in clickhouse.query(
            "SELECT toString(event_id), account_id, integration_id, message, parameters, details, "
            "toUnixTimestamp64Milli(occurred_at), redacted_parameters FROM integration_events FINAL"
        ).result_rows
    }
    assert set(stored) == {str(uuid.UUID(event["event_id"])) for event in events}
    for event in events:
        assert stored[str(uuid.UUID(event["event_id"]))] == (
            event["account_id"], event["integration"]["id"], event["message"] or "", event["parameters"],
            event["details"] or "", event["occurred_at"], event["redacted_parameters"],
        )


# ---------------------------------------------------------------- the real worker, the real broker, the real sink


def worker_corpus(count: int = 300) -> list[tuple[bytes, bytes | None]]:
    """A few hundred bad inputs as (key, value): the fixed corpus, then seeded draws of every generated kind (no
    hypothesis here: the same bytes on every run), then huge keys (a dead letter keeps its message's key)."""
    rng = random.Random(9)
    values = [value for _, value, _ in FIXED_CORPUS]
    shapes = truncation_corpus()
    while len(values) < count:
        kind = len(values) % 6
        if kind == 0:
            values.append(rng.randbytes(rng.randint(0, 200)))
        elif kind == 1:
            values.append(struct.pack(">bI", 0, RAW_ID) + rng.randbytes(rng.randint(0, 400)))
        elif kind == 2:
            shape = rng.choice(shapes)
            values.append(shape[: rng.randint(0, len(shape) - 1)])
        elif kind == 3:
            values.append(struct.pack(">bI", 0, rng.randint(3, 2**32 - 1)) + rng.choice(shapes)[5:])
        elif kind == 4:
            marker = "\x07\x07"
            record = raw_record(**{rng.choice(["message", "type", "account_id"]): marker})
            values.append(splice(framed(record), marker.encode(), rng.choice([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0"])))
        else:
            values.append(framed(raw_record(
                occurred_at=rng.choice([0, -1, LONG_MIN, LONG_MAX, MS_2000 - 1, MS_YEAR_9999_END]),
                account_id=rng.choice(["acct", ""]))))
    keyed: list[tuple[bytes, bytes | None]] = [(b"acct-bad", value) for value in values]
    keyed += [
        (b"k" * 600_000, b"not Avro"),
        (b"k" * 600_000, struct.pack(">bI", 0, RAW_ID) + rng.randbytes(600_000)),
        (b"k" * 300_000, framed(raw_record())),
    ]
    return keyed


@pytest.mark.integration
def test_a_real_worker_and_sink_store_every_good_event_and_dead_letter_every_bad_one(settings, clickhouse):
    now = datetime.now(timezone.utc)
    inputs = worker_corpus()
    events = list(simulate_events(400, accounts=3, seed=31))
    good = [RAW_CODEC.encode(event) for event in events]
    good_ids = {str(event["event_id"]) for event in events}
    # The oracle: the pure function the worker runs; the worker must do exactly this with each input.
    expected_dead: Counter[tuple[bytes | None, str]] = Counter()
    expected_ids = set(good_ids)
    source_of: dict[str, bytes] = {}
    for _, value in inputs:
        outcome = process_message(value, partition=0, offset=0, processed_at=now, settings=settings,
                                  raw_codec=RAW_CODEC, enriched_codec=ENRICHED_CODEC)
        TRIED["worker: bad or absurd inputs"] += 1
        if isinstance(outcome, Rejected):
            expected_dead[(value[:MAX_VALUE_BYTES] if value is not None else None, outcome.reason)] += 1
            OUTCOMES["worker: bad or absurd inputs"][outcome.reason] += 1
        else:
            expected_ids.add(str(outcome[1]["event_id"]))
            source_of[str(outcome[1]["event_id"])] = value
            OUTCOMES["worker: bad or absurd inputs"][STORED] += 1
    TRIED["worker: good events"] += len(good)
    assert sum(expected_dead.values()) >= 250

    worker = start_stream_worker(settings, settings.data_dir / "stream.log")

    def alive() -> None:
        """The process runs and its agent too (a crashed Faust agent leaves the process up, processing nothing)."""
        log = (settings.data_dir / "stream.log").read_text(errors="replace")
        assert worker.poll() is None, log[-3000:]
        assert "Crashed reason=" not in log, "the enrich agent crashed: " + log[log.index("Crashed reason="):][:1500]

    try:
        with SinkService(settings) as sink:
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "message.max.bytes": 5_000_000,
                                 "linger.ms": 5})
            stream_of_inputs = iter(inputs)
            for index, value in enumerate(good):  # interleaved: good, bad, good, ...
                producer.produce(settings.topic_raw, key=f"acct-{index % 3}".encode(), value=value)
                bad = next(stream_of_inputs, None)
                if bad is not None:
                    producer.produce(settings.topic_raw, key=bad[0], value=bad[1])
                producer.poll(0)
            for key, value in stream_of_inputs:
                producer.produce(settings.topic_raw, key=key, value=value)
            assert producer.flush(60) == 0
            del producer  # closed now, not when the session's broker is gone

            def stored_ids() -> set[str]:
                return {row[0] for row in clickhouse.query(
                    "SELECT toString(event_id) FROM integration_events FINAL").result_rows}

            def check() -> None:
                alive()
                sink.check_alive()

            try:
                wait_for(lambda: len(stored_ids()) >= len(expected_ids), 180, f"{len(expected_ids)} stored events",
                         check=check)
            except AssertionError as exc:
                enriched = read_topic(settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions,
                                      10**9, timeout=5)
                dead = read_topic(settings.kafka_bootstrap, settings.topic_dlq, settings.topic_partitions, 10**9,
                                  timeout=5)
                missing = expected_ids - stored_ids()
                raise AssertionError(
                    f"{exc}: {len(stored_ids())} stored, {len(enriched)} on the enriched topic, {len(dead)} dead "
                    f"letters {Counter(dict(m.headers())[DLQ_REASON_HEADER].decode() for m in dead)}; "
                    f"{len(missing)} missing: {[(source_of.get(i, b'a good one')[:150], len(source_of.get(i, b''))) for i in sorted(missing)[:5]]}"
                ) from None
            dead = read_topic(settings.kafka_bootstrap, settings.topic_dlq, settings.topic_partitions,
                              sum(expected_dead.values()), timeout=120)
            time.sleep(2)  # anything extra (a duplicate, a stray dead letter) would arrive now
            assert stored_ids() == expected_ids
            dead += read_topic(settings.kafka_bootstrap, settings.topic_dlq, settings.topic_partitions,
                               10**9, timeout=3)[len(dead):]
            got = Counter((message.value(), dict(message.headers())[DLQ_REASON_HEADER].decode()) for message in dead)
            assert got == expected_dead
            assert all(len(message.key() or b"") <= MAX_KEY_BYTES for message in dead)
            check()
            OUTCOMES["worker: good events"][STORED] += len(good)
    finally:
        stop_process(worker)
    assert worker.returncode == 0, "the worker did not stop gracefully"


# ---------------------------------------------------------------- figures


@pytest.fixture(scope="module", autouse=True)
def figures():
    """Print and save how many inputs each category tried (the figures the reliability report quotes)."""
    started = time.monotonic()
    yield
    lines = [
        "# Bad-input figures",
        "",
        f"Run {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
        f"{time.monotonic() - started:.0f} s, `tests/stream/test_bad_input.py` (only the tests that ran count).",
        "",
        "| category | inputs tried | outcomes | crashes |",
        "|---|---:|---|---:|",
    ]
    for category, tried in TRIED.items():
        outcomes = ", ".join(f"{reason} {count}" for reason, count in sorted(OUTCOMES[category].items()))
        lines.append(f"| {category} | {tried:,} | {outcomes} | {CRASHES[category]} |")
    lines += ["", f"**Total inputs tried: {sum(TRIED.values()):,}; crashes (exceptions out of process_message / "
                  f"worker deaths): {sum(CRASHES.values())}.**", "",
              "Worker rows: every outcome above was checked against the real broker, Faust worker and sink (every "
              "stored event_id in ClickHouse, every dead letter with its reason header, the worker alive).", "",
              "Rerun: `.venv/bin/python -m pytest tests/stream/test_bad_input.py -q -s`", ""]
    report = "\n".join(lines)
    print("\n" + report)
    FIGURES_FILE.write_text(report)
