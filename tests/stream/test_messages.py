"""Error-message normalisation: masking, first-line extraction, categories, fingerprints, and the corpus figures."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ievents.stream.messages import (
    CATEGORIES,
    MAX_TEMPLATE_CHARS,
    NormalisedMessage,
    category_rules,
    first_meaningful_line,
    normalise_error_message,
)

CORPUS = Path(__file__).parents[1] / "data" / "error_messages.jsonl"
MIN_SCORE = 0.9


def template(message: str, platform: str | None = None) -> str:
    return normalise_error_message(message, platform).template


# ---------------------------------------------------------------- masking, kind by kind


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # uuid, hex, numbers, ids
        ("Instance 2b1a9f3c-5e1d-4f6a-9c2b-8e7d6f5a4b3c failed", "Instance <uuid> failed"),
        ("Instance 2B1A9F3C5E1D4F6A9C2B8E7D6F5A4B3C failed", "Instance <uuid> failed"),
        ("request id 9f8e7d6c5b4a3f2e", "request id <hex>"),
        ("object at 0x7f3a2c1b9e80", "object at <hex>"),
        ("Member 48213 is inactive", "Member <num> is inactive"),
        ("Conversion amount must be greater than 0, got -12.50", "Conversion amount must be greater than <num>, got <num>"),
        ("retry after 1,500.25 units", "retry after <num> units"),
        ("timed out after 30000ms", "timed out after <num>ms"),
        ("Product WIDGET-77 not found", "Product <id> not found"),
        ("No such customer: cus_NffrFeUfNV2Hib", "No such customer: <id>"),
        ("request req_AbCdEfGhIjKlMn failed", "request <id> failed"),  # no digit, still a Stripe id
        ("Invalid API Key provided: sk_live_****4242", "Invalid API Key provided: <id>"),
        ("invoice INV-1042 is locked", "invoice <id> is locked"),
        ("The consumer isn't authorized to access Magento_Sales::actions_view.", "The consumer isn't authorized to access <id>."),
        ("注文番号12345が見つかりません", "注文番号<num>が見つかりません"),
        # order numbers
        ("Order #1042 synced", "Order <order> synced"),
        ("Order #R123456789 shipped", "Order <order> shipped"),
        # emails, URLs, hosts
        ("Duplicate email: jane.doe+ref@example.co.uk already referred", "Duplicate email: <email> already referred"),
        ("Email jane@example is invalid", "Email <email> is invalid"),
        ("Request to https://api.example.com/v1/orders/1042?x=1 timed out", "Request to <url> timed out"),
        ("see https://example.com/docs.", "see <url>."),
        ("getaddrinfo ENOTFOUND us21.api.mailchimp.com", "getaddrinfo ENOTFOUND <host>"),
        # IPs, v4 and v6, with ports
        ("Connection refused (10.0.3.4:443)", "Connection refused (<ip>)"),
        ("same IP as referrer (203.0.113.7)", "same IP as referrer (<ip>)"),
        ("Too many requests from 203.0.113.7. Slow down.", "Too many requests from <ip>. Slow down."),
        ("peer 2001:0db8:85a3:0000:0000:8a2e:0370:7334 reset", "peer <ip> reset"),
        ("peer fe80::1ff:fe23:4567:890a reset", "peer <ip> reset"),
        ("dial tcp [2001:db8::a1]:443: connect: connection refused", "dial tcp <ip>: connect: connection refused"),
        # timestamps and dates
        ("token expired at 2026-01-01T10:00:00Z", "token expired at <timestamp>"),
        ("token expired at 2026-03-15T08:30:00.123+00:00", "token expired at <timestamp>"),
        ("token expired at 2026-01-01 10:00:00 UTC", "token expired at <timestamp>"),
        ("token expired at 05/02/2024 10:22:13", "token expired at <timestamp>"),
        ("token expired at Mon, 01 Jan 2024 10:00:00 GMT", "token expired at <timestamp>"),
        ("canceled on March 3, 2024", "canceled on <timestamp>"),
        ("canceled on 1 February 2025", "canceled on <timestamp>"),
        ("Marketplace 12, 2024 stays", "Marketplace <num>, <num> stays"),  # not a month
        # amounts with currency
        ("got -12.50 USD", "got <amount>"),
        ("price $19.99", "price <amount>"),
        ("price €5", "price <amount>"),
        ("price 12,00 EUR", "price <amount>"),
        ("price USD 250.00", "price <amount>"),
        ("Amount must be at least $0.50 usd", "Amount must be at least <amount>"),
        ("Refund of €1.234,56 exceeds", "Refund of <amount> exceeds"),
        # quoted values
        ("No such customer: 'cus_NffrFeUfNV2Hib'", "No such customer: <quoted>"),
        ('field "total_price" must be positive', "field <quoted> must be positive"),
        ("Le champ « email » est invalide", "Le champ <quoted> est invalide"),
        ("undefined method `email' for nil:NilClass", "undefined method <quoted> for nil:NilClass"),
        ("Zap “Orders → Referrals” halted", "Zap <quoted> halted"),
        ("The consumer isn't authorized", "The consumer isn't authorized"),  # an apostrophe is not a quote
        # JSON: quotes are structure, what varies inside the strings is masked
        ('{"errors":{"email":["has already been taken"]}}', '{"errors":{"email":["has already been taken"]}}'),
        ('{"detail":"jane@x.com is already a list member","instance":"2b1a9f3c-5e1d-4f6a-9c2b-8e7d6f5a4b3c"}',
         '{"detail":"<email> is already a list member","instance":"<uuid>"}'),
        ('{"errors":{"name":"Product name \'Blue Hoodie\' is a duplicate"}}',
         '{"errors":{"name":"Product name <quoted> is a duplicate"}}'),
        # phone numbers, names, referral codes
        ("phone number is invalid: +44 20 7946 0958", "phone number is invalid: <phone>"),
        ("One Click Access granted to Jane Doe", "One Click Access granted to <name>"),
        ("Conversion recorded for José Álvarez (jose@example.com)", "Conversion recorded for <name> (<email>)"),
        ("You and Wei Chen were working on this. Wei Chen finished first.", "You and <name> were working on this. <name> finished first."),
        ("Referral code QWERTY not found", "Referral code <id> not found"),  # all letters: the context says it is a code
        ("No referral code on the visit", "No referral code on the visit"),
        # HTTP status codes are meaning, kept with their context
        ("401 Unauthorized: access token expired", "401 Unauthorized: access token expired"),
        ("[429] Too Many Requests: retry after 12 seconds", "[429] Too Many Requests: retry after <num> seconds"),
        ("Too Many Requests (429)", "Too Many Requests (429)"),
        ("HTTP 404", "HTTP 404"),
        ("HTTP/1.1 503 Service Unavailable", "HTTP/1.1 503 Service Unavailable"),
        ("AuthenticationFailed; errorCode=003200; statusCode=401", "AuthenticationFailed; errorCode=<num>; statusCode=401"),
        ('{"status":422,"title":"Invalid"}', '{"status":422,"title":"Invalid"}'),
        ("Shopify responded with 404 for GET /x", "Shopify responded with 404 for GET /x"),
        ("Imported 404 rows", "Imported <num> rows"),  # a bare number is a number
        # vocabulary that mixes letters and digits stays
        ("OAuth2 token rejected by API v2", "OAuth2 token rejected by API v2"),
        # whitespace collapsed, case kept
        ("  Customer   NOT\tfound  ", "Customer NOT found"),
    ],
)
def test_masking(message, expected):
    assert template(message) == expected


def test_the_platform_s_own_name_is_masked_so_platforms_share_a_template():
    shopify = normalise_error_message("502 Bad Gateway: Shopify returned an invalid response", "Shopify")
    bigcommerce = normalise_error_message("502 Bad Gateway: BigCommerce returned an invalid response", "BigCommerce")
    assert shopify.template == "502 Bad Gateway: <platform> returned an invalid response"
    assert shopify.fingerprint == bigcommerce.fingerprint
    assert template("Magento_Sales is fine", "Magento") == "Magento_Sales is fine"  # whole words only


def test_masked_lists_kinds_in_order_of_first_appearance_once_each():
    result = normalise_error_message("Customer jane@x.com (id 12) and bob@y.com (id 13) at 2026-01-01T00:00:00Z")
    assert result.masked == ("email", "num", "timestamp")
    assert normalise_error_message("Invalid API key").masked == ()


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("401 Unauthorized", "404 Not Found"),
        ("GET /orders returned 401 Unauthorized", "GET /orders returned 404 Not Found"),
        ("Shopify responded with 401", "Shopify responded with 404"),
        ("Customer 12 not found", "Product 12 not found"),
        ('{"errors":{"email":["has already been taken"]}}', '{"errors":{"phone":["has already been taken"]}}'),
        ("Missing required parameter: email", "Missing required parameter: referral_code"),
    ],
)
def test_messages_that_differ_by_a_meaningful_word_do_not_group(one, other):
    assert normalise_error_message(one).fingerprint != normalise_error_message(other).fingerprint


# ---------------------------------------------------------------- first meaningful line

JAVA_TRACE = """java.net.SocketTimeoutException: Read timed out
\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)
\tat com.netsuite.webservices.platform.NetSuiteBindingStub.upsert(NetSuiteBindingStub.java:1204)"""

JS_TRACE = """TypeError: Cannot read properties of undefined (reading 'email')
    at RR.convert (https://cdn.referral.example/rr.min.js:1:10423)
    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)"""

PYTHON_TRACE = """Traceback (most recent call last):
  File "/app/connector/woo.py", line 88, in map_order
    customer = payload['billing']['email']
KeyError: 'email'"""

PYTHON_CHAINED = """Traceback (most recent call last):
  File "/app/spapi/client.py", line 61, in get_orders
    return self._session.get(url, timeout=30)
socket.timeout: The read operation timed out

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/app/spapi/client.py", line 77, in run
    orders = self.get_orders(after)
requests.exceptions.ReadTimeout: Read timed out. (read timeout=30)
"""

PHP_TRACE = """PHP Fatal error:  Uncaught Error: Call to a member function get_id() on bool in /var/www/x.php:1245
Stack trace:
#0 /var/www/html/wp-includes/class-wp-hook.php(324): WC_Order->maybe_set_user_billing_email()
#1 {main}
  thrown in /var/www/x.php on line 1245"""


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("\n\n   Customer not found  \n\nmore detail", "Customer not found"),
        (JAVA_TRACE, "java.net.SocketTimeoutException: Read timed out"),
        (JS_TRACE, "TypeError: Cannot read properties of undefined (reading 'email')"),
        (PYTHON_TRACE, "KeyError: 'email'"),
        (PYTHON_CHAINED, "requests.exceptions.ReadTimeout: Read timed out. (read timeout=30)"),
        (PHP_TRACE, "PHP Fatal error: Uncaught Error: Call to a member function get_id() on bool in /var/www/x.php:1245"),
        ("Sync failed:\n  Customer 7: Email address is invalid", "Sync failed: Customer 7: Email address is invalid"),
        ("#1042 could not be synced\n#0 /var/www/a.php(12): f()", "#1042 could not be synced"),  # an order, not a PHP frame
        ('{\n  "errors": {\n    "email": ["has already been taken"]\n  }\n}', '{"errors":{"email":["has already been taken"]}}'),
        ("  at com.foo.Bar.baz(Bar.java:12)\n", "at com.foo.Bar.baz(Bar.java:12)"),  # nothing but a frame: keep it
        ("at least one line item is required\nsecond line", "at least one line item is required"),  # prose, not a frame
    ],
)
def test_first_meaningful_line(message, expected):
    assert first_meaningful_line(message) == expected


def test_stack_traces_group_by_their_meaningful_line():
    other_lines = JAVA_TRACE.replace("1204", "77").replace("288", "301")
    assert normalise_error_message(JAVA_TRACE).fingerprint == normalise_error_message(other_lines).fingerprint
    assert normalise_error_message(JAVA_TRACE).category == "timeout"
    assert template(PYTHON_TRACE) == "KeyError: <quoted>"


@pytest.mark.parametrize("message", [None, "", "   ", "\n\t\n"])
def test_no_message_gives_blank_fields(message):
    assert normalise_error_message(message, "Shopify") == NormalisedMessage(template="", category="", fingerprint="", masked=())


# ---------------------------------------------------------------- determinism, cap, cache

PINNED = ("Referral code AB12CD not found", "Referral code <id> not found", "9d0f9c03a6af9944")


def test_fingerprint_is_pinned():
    """Stored fingerprints must survive restarts and upgrades: changing this value regroups history."""
    message, expected_template, expected_fingerprint = PINNED
    result = normalise_error_message(message)
    assert result.template == expected_template
    assert result.fingerprint == expected_fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", result.fingerprint)


def test_same_template_same_fingerprint_and_category_across_variables():
    variants = [f"Referral code {code} not found" for code in ("AB12CD", "QWERTY", "X7K2M9", "00A1B2")]
    results = {normalise_error_message(v) for v in variants}
    assert len({(r.template, r.fingerprint, r.category) for r in results}) == 1


def test_deterministic_across_processes_whatever_the_hash_seed():
    """No set or dict order, no hash(): another interpreter with another hash seed agrees."""
    messages = [
        PINNED[0],
        "You and Wei Chen were working on this at the same time. Wei Chen finished before you did.",
        PYTHON_CHAINED,
        '{"errors":{"email":["has already been taken"]}}',
    ]
    script = (
        "import json, sys\n"
        "from ievents.stream.messages import normalise_error_message as n\n"
        "print(json.dumps([list(n(m, 'Shopify').__dict__.values()) for m in json.loads(sys.stdin.read())]))\n"
    )
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], input=json.dumps(messages), capture_output=True, text=True, env=env, check=True
        )
        outputs.append(json.loads(done.stdout))
    here = [[r.template, r.category, r.fingerprint, list(r.masked)] for r in (normalise_error_message(m, "Shopify") for m in messages)]
    assert outputs[0] == outputs[1] == here


def test_long_messages_are_capped_and_still_group():
    tail = " ".join(f"line {i}: SKU WIDGET-{i} quantity must be at least 1;" for i in range(1, 200))
    one = normalise_error_message(f"Bulk upsert of batch 7f3e2a1b failed: {tail}")
    other = normalise_error_message(f"Bulk upsert of batch 0a1b2c3d failed: {tail.replace('WIDGET', 'MUG')}")
    assert len(one.template) == MAX_TEMPLATE_CHARS
    assert one.template.endswith("…")
    assert one.fingerprint == other.fingerprint
    assert one.category == "validation"


def test_a_huge_message_is_cheap_and_bypasses_the_cache():
    huge = "Invalid value: " + "x" * 2_000_000
    started = time.perf_counter()
    result = normalise_error_message(huge)
    assert time.perf_counter() - started < 0.5
    assert len(result.template) <= MAX_TEMPLATE_CHARS
    assert result is not normalise_error_message(huge)  # not cached: the cache must not pin megabytes


def test_repeated_messages_come_from_the_cache():
    assert normalise_error_message("Invalid API key", "REST API v2") is normalise_error_message("Invalid API key", "REST API v2")


@pytest.mark.parametrize(
    "adversarial",
    ["a@" * 1000, "1." * 1000, "'" * 2000, '"a' * 1000, "ab:" * 700, "#1" * 1000, "to Jane Doe-Smith " * 100, "$1,1" * 500],
)
def test_no_catastrophic_backtracking(adversarial):
    started = time.perf_counter()
    normalise_error_message(adversarial + str(time.perf_counter_ns()))  # never from the cache
    assert time.perf_counter() - started < 0.25


# ---------------------------------------------------------------- categories


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # HTTP codes alone
        ("HTTP 401", "auth"),
        ("HTTP 403", "auth"),
        ("HTTP 404", "not_found"),
        ("HTTP 409", "conflict"),
        ("HTTP 422", "validation"),
        ("HTTP 400", "validation"),
        ("HTTP 429", "rate_limit"),
        ("HTTP 408", "timeout"),
        ("HTTP 504", "timeout"),
        ("HTTP 500", "upstream_error"),
        ("HTTP 503", "upstream_error"),
        ('{"status":422}', "validation"),
        # wording
        ("Invalid API key", "auth"),
        ("[API] This action requires merchant approval for write_orders scope.", "auth"),
        ("Rate limit exceeded: 100 requests per minute", "rate_limit"),
        ("Missing required parameter: email", "validation"),
        ("No such customer: 'cus_123abc'", "not_found"),
        ("Connection refused (10.0.3.4:443)", "network"),
        ("Request to https://x.test/a timed out after 30000 ms", "timeout"),
        ("502 Bad Gateway: Shopify returned an invalid response", "upstream_error"),
        ("TypeError: Cannot read properties of undefined (reading 'email')", "upstream_error"),
        # referral-specific
        ("Fraud rule triggered: same IP as referrer (203.0.113.7)", "fraud_rule"),
        ("Not a valid member referral link", "invalid_referral"),
        ("Referral code AB12CD not found", "invalid_referral"),
        ("Invalid referral code 'SPRING-1'", "invalid_referral"),
        ("Duplicate email: jane@example.com already referred", "duplicate"),
        # duplicate (it already exists) vs conflict (its state forbids the change)
        ("409 Conflict: Customer with email jane@x.com already exists", "duplicate"),
        ('{"errors":{"email":["has already been taken"]}}', "duplicate"),
        ("Charge ch_3MmlLrLkdIwHu7ix0snN0B15 has already been refunded.", "conflict"),
        ("Invoice not of valid status for modification (invoice INV-1042)", "conflict"),
        ("409 Conflict", "conflict"),
        # a variable value cannot sway the category
        ("Customer fraud.team@example.com synced", "unknown"),
        ("Order #1042 synced", "unknown"),
    ],
)
def test_category(message, expected):
    assert normalise_error_message(message).category == expected


def test_rules_file_is_valid():
    rules = category_rules()
    assert rules, "no rules loaded"
    assert {category for category, _ in rules} <= set(CATEGORIES)
    assert set(CATEGORIES) - {category for category, _ in rules} == {"unknown"}  # every category reachable


def test_a_rule_naming_an_unknown_category_fails_at_load(tmp_path):
    bad = tmp_path / "rules.json"
    bad.write_text(json.dumps({"rules": [{"category": "oops", "patterns": ["x"]}]}))
    with pytest.raises(ValueError, match="oops"):
        category_rules(bad)


# ---------------------------------------------------------------- the corpus


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_corpus_lines_are_well_formed():
    rows = load_corpus()
    assert len(rows) >= 300
    for row in rows:
        assert set(row) == {"platform", "message", "category", "group"}, row
        assert row["category"] in CATEGORIES, row
        assert row["message"].strip(), row
    sizes = Counter(row["group"] for row in rows)
    assert all(2 <= size <= 8 for size in sizes.values()), {g: n for g, n in sizes.items() if not 2 <= n <= 8}
    categories_by_group = defaultdict(set)
    for row in rows:
        categories_by_group[row["group"]].add(row["category"])
    assert all(len(categories) == 1 for categories in categories_by_group.values())


def test_corpus_accuracy_precision_recall():
    """Category accuracy, and pairwise precision / recall of "same fingerprint" against "same group"."""
    rows = load_corpus()
    results = [normalise_error_message(row["message"], row["platform"]) for row in rows]

    accuracy = sum(row["category"] == result.category for row, result in zip(rows, results)) / len(rows)
    both = same_fingerprint = same_group = 0
    for (row_a, res_a), (row_b, res_b) in itertools.combinations(zip(rows, results), 2):
        grouped, fingerprinted = row_a["group"] == row_b["group"], res_a.fingerprint == res_b.fingerprint
        both += grouped and fingerprinted
        same_group += grouped
        same_fingerprint += fingerprinted
    precision, recall = both / same_fingerprint, both / same_group

    everything = _timing(rows)
    typical = _timing([row for row in rows if "\n" not in row["message"] and len(row["message"]) <= 200])
    groups = len({row["group"] for row in rows})
    print(
        f"\nerror-message corpus: {len(rows)} messages, {groups} groups, "
        f"{len({r.fingerprint for r in results})} templates\n"
        f"  category accuracy {accuracy:.3f}   same-template precision {precision:.3f}   recall {recall:.3f}\n"
        + "".join(
            f"  µs/call, {name}: cold {t['cold']:.1f} (no cache at all), "
            f"{t['warm_template']:.1f} (new message, known template), cached {t['cached']:.2f}\n"
            for name, t in (("typical messages (one line, <= 200 chars)", typical), ("whole corpus", everything))
        )
    )
    misses = [(row["group"], row["category"], res.category) for row, res in zip(rows, results) if row["category"] != res.category]
    split = sorted(
        group for group, fps in _fingerprints_by_group(rows, results).items() if len(fps) > 1
    )
    print(f"  wrong categories: {misses or 'none'}\n  groups split over several templates: {split or 'none'}")
    assert accuracy >= MIN_SCORE
    assert precision >= MIN_SCORE
    assert recall >= MIN_SCORE


def _fingerprints_by_group(rows, results) -> dict[str, set[str]]:
    found = defaultdict(set)
    for row, result in zip(rows, results):
        found[row["group"]].add(result.fingerprint)
    return found


def _timing(rows) -> dict[str, float]:
    """µs per call over the corpus: with every cache cleared, with only the per-template category cache warm, cached."""
    from ievents.stream import messages

    calls = [(row["message"], row["platform"]) for row in rows]

    def per_call(function, clear=lambda: None) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for message, platform in calls:
                clear()
                function(message, platform)
            best = min(best, (time.perf_counter() - started) / len(calls) * 1e6)
        return best

    cold = per_call(messages._normalise, messages._categorise.cache_clear)
    for message, platform in calls:
        messages._normalise(message, platform)
    warm_template = per_call(messages._normalise)
    for message, platform in calls:
        normalise_error_message(message, platform)
    cached = per_call(normalise_error_message)
    return {"cold": cold, "warm_template": warm_template, "cached": cached}


# ---------------------------------------------------------------- what the simulator says


def test_simulator_messages_group_by_the_outcome_that_produced_them():
    """Every wording in integrations.json, whatever ids fill it, gives one template; different wordings never share one."""
    from ievents.producers.simulator import INTEGRATIONS_FILE, simulate_events_with_truth

    wordings = sorted({o["message"] for o in json.loads(INTEGRATIONS_FILE.read_text())["outcomes"] if o["message"]})
    matchers = [(wording, _wording_regex(wording)) for wording in wordings]
    templates_by_wording: dict[str, set[str]] = defaultdict(set)
    for event, _truth in simulate_events_with_truth(4000, accounts=20, seed=11):
        message = event["message"]
        if not message:
            assert normalise_error_message(message).template == ""
            continue
        candidates = [wording for wording, regex in matchers if regex.match(message)]
        assert candidates, message
        wording = max(candidates, key=lambda w: len(re.sub(r"\{[a-z_]+\}", "", w)))  # the most specific
        templates_by_wording[wording].add(normalise_error_message(message, event["integration"]["platform"]).template)

    split = {w: t for w, t in templates_by_wording.items() if len(t) > 1}
    assert not split
    owners = Counter(template for templates in templates_by_wording.values() for template in templates)
    assert not [t for t, n in owners.items() if n > 1]
    assert len(templates_by_wording) >= len(wordings) * 0.8  # the draw reached most wordings


def _wording_regex(wording: str) -> re.Pattern:
    """``Order #{order_number} synced`` -> a regex matching any rendering of it (``{{`` is a literal brace)."""
    parts = re.split(r"(\{\{|\}\}|\{[a-z_]+\})", wording)
    pieces = [
        re.escape(part[0]) if part in ("{{", "}}") else "(.+?)" if part.startswith("{") else re.escape(part)
        for part in parts
    ]
    return re.compile("".join(pieces) + r"\Z", re.DOTALL)
