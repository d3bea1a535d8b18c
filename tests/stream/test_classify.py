"""Canonical types and statuses from what platforms actually send."""

from __future__ import annotations

import pytest

from ievents.stream.classify import classify_type, normalise_status


@pytest.mark.parametrize(
    ("raw_type", "expected"),
    [
        ("OneClickAccess", "one_click_access"),
        ("one-click", "one_click_access"),
        ("one_click_access", "one_click_access"),
        ("api.call", "api_call"),
        ("ApiCall", "api_call"),
        ("API", "api_call"),
        ("script", "integration_script"),
        ("IntegrationScript", "integration_script"),
        ("conversion.created", "conversion"),
        ("Conversion", "conversion"),
        ("orders/create", "order"),
        ("order.sync", "order"),
        ("customer.sync", "customer"),
        ("customers/update", "customer"),
        ("product_update", "product"),
        ("products/create", "product"),
        ("inventory_level", "product"),
        ("", "other"),
        ("heartbeat", "other"),
    ],
)
def test_classify_type(raw_type, expected):
    assert classify_type(raw_type) == expected


@pytest.mark.parametrize(
    ("raw_type", "platform", "expected"),
    [
        ("charge.succeeded", "Stripe", "conversion"),
        ("CHARGE.SUCCEEDED", "stripe", "conversion"),
        ("charge.succeeded", "Shopify", "other"),  # only Stripe's own vocabulary says what a charge is
        ("deal.creation", "HubSpot", "conversion"),
        ("contact.creation", "HubSpot", "customer"),
        ("orders/create", "Stripe", "order"),  # generic rules still apply on a platform with its own table
    ],
)
def test_classify_type_uses_a_platforms_own_event_names_first(raw_type, platform, expected):
    assert classify_type(raw_type, platform) == expected


@pytest.mark.parametrize(
    ("raw_status", "message", "expected"),
    [
        ("success", None, "success"),
        ("Success", None, "success"),
        ("OK", None, "success"),
        ("completed", None, "success"),
        ("200", None, "success"),
        ("201 Created", None, "success"),
        ("true", None, "success"),
        ("error", "Invalid API key", "failure"),
        ("failed", None, "failure"),
        ("Failure", None, "failure"),
        ("rejected", None, "failure"),
        ("timed_out", None, "failure"),
        ("400", None, "failure"),
        ("HTTP 429", None, "failure"),
        ("503", None, "failure"),
        ("info", None, "info"),
        ("skipped", None, "info"),
        ("no referral created", None, "info"),
        ("No-Referral_Created", None, "info"),
        ("302", None, "info"),
        ("", None, "info"),
        (None, None, "info"),
        ("something new", None, "info"),
        ("done", None, "success"),
        ("false", None, "failure"),
        # Captured, but nothing created: info whatever the status word says.
        ("success", "Not a valid member referral link", "info"),
        ("failed", "Fraud rule triggered: same IP as referrer (203.0.113.7)", "info"),
    ],
)
def test_normalise_status(raw_status, message, expected):
    assert normalise_status(raw_status, message) == expected


@pytest.mark.parametrize(
    ("raw_status", "result", "expected"),
    [
        ("processed", "failed", "failure"),  # unknown status word: the result decides
        ("processed", "200", "success"),
        ("success", "No referral created", "info"),  # the referral rule reads the result too
        ("processed", "whatever", "info"),
        ("error", "ok", "failure"),  # a known status wins over the result
    ],
)
def test_normalise_status_reads_the_result_when_the_status_says_nothing(raw_status, result, expected):
    assert normalise_status(raw_status, None, result) == expected
