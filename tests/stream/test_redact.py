"""Secrets are masked before storage, by key and by value; nothing else changes."""

from __future__ import annotations

import json

import pytest

from ievents.stream.redact import REDACTED, luhn_valid, redact, redact_details, redact_parameters


@pytest.mark.parametrize(
    ("parameters", "redacted"),
    [
        ({}, []),
        ({"email": "a@b.c", "sku": "W-1", "order_number": "1042"}, []),
        ({"password": "p", "Authorization": "Bearer x", "session_cookie": "c", "email": "a@b.c"},
         ["Authorization", "password", "session_cookie"]),
        ({"client_secret": "s", "access_token": "t", "API-Key": "k", "apikey": "k2"},
         ["API-Key", "access_token", "apikey", "client_secret"]),
        ({"note": "paid with 4111 1111 1111 1111 yesterday"}, ["note"]),
        ({"header": "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig"}, ["header"]),
        # Digit runs that fail the Luhn check (order numbers, phone numbers) stay.
        ({"order_id": "4111111111111112", "phone": "+1 415 555 0100"}, []),
        ({"passenger": "Ann", "author": "Bob", "tokenized": "no"}, ["tokenized"]),
    ],
)
def test_redact_parameters(parameters, redacted):
    cleaned, names = redact_parameters(parameters)
    assert names == redacted
    for key, value in parameters.items():
        if key in redacted:
            assert cleaned[key] != value and REDACTED in cleaned[key]
        else:
            assert cleaned[key] == value


def test_a_card_inside_free_text_is_masked_and_the_words_around_it_kept():
    cleaned, _ = redact_parameters({"note": "paid with 4111-1111-1111-1111 yesterday"})
    assert cleaned["note"] == f"paid with {REDACTED} yesterday"


@pytest.mark.parametrize(
    ("details", "expected", "paths"),
    [
        (None, None, []),
        ("", "", []),
        ('{"referral": {"name": "Ann"}}', '{"referral": {"name": "Ann"}}', []),
        ('{"request": {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, "n": 1}',
         {"request": {"headers": {"Authorization": REDACTED}}, "n": 1}, ["details.request.headers.Authorization"]),
        ('{"cards": ["5555555555554444", "not a card"]}', {"cards": [REDACTED, "not a card"]}, ["details.cards[0]"]),
        ("free text with Bearer abcdefghijklmnop inside", f"free text with {REDACTED} inside", ["details"]),
    ],
)
def test_redact_details(details, expected, paths):
    cleaned, found = redact_details(details)
    assert found == paths
    assert (json.loads(cleaned) if isinstance(expected, dict) else cleaned) == expected


def test_redact_reports_parameter_names_then_detail_paths():
    _, _, names = redact({"api_key": "k", "email": "a@b.c"}, '{"token": "t"}')
    assert names == ["api_key", "details.token"]


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("5555555555554444", True), ("378282246310005", True),
     ("4111111111111112", False), ("1234567890123", False)],
)
def test_luhn(digits, valid):
    assert luhn_valid(digits) is valid
