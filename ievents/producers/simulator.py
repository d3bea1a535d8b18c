"""A seeded simulator of the raw events real integrations send, for demos, tests and benchmarks.

The events are messy on purpose, the way real ones are: every platform spells
event types and statuses its own way and words its own error messages, with
ids, emails, amounts and timestamps inside them. That mess is what the stream
exists to normalise, so the simulator must not tidy it up. Next to each event,
:func:`simulate_events_with_truth` says what the simulator *meant* (canonical
type and status), which end-to-end tests compare with what the stream made of it.

Everything is drawn from one ``random.Random(seed)``: the same seed and start
give the same events, event ids included (so replaying a seed into the
pipeline produces duplicates, which the sink must absorb). What the
integrations are and what they say lives in ``integrations.json`` beside this
module; the code here only draws from it.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

INTEGRATIONS_FILE = Path(__file__).with_name("integrations.json")

INFO, SUCCESS, FAILURE = "info", "success", "failure"

# The normal share of each canonical status, for every integration not told to fail.
STATUS_MIX = {SUCCESS: 0.75, FAILURE: 0.15, INFO: 0.10}
# How many integrations of each family an account connects (inclusive range).
CONNECTIONS_PER_FAMILY = {"referral": (2, 3), "commerce": (2, 3)}
# Share of events that carry a secret-looking parameter, so redaction has work to do.
SECRET_PARAMETER_RATE = 0.03
# Share of events that come without any details JSON.
MISSING_DETAILS_RATE = 0.15

Event = dict[str, Any]
Truth = dict[str, str]


@dataclass(frozen=True)
class Outcome:
    """One way an event can end: the status the simulator means, and how the platform words it."""

    status: str
    message: str | None
    result: str | None
    http_status: str | None
    without_parameters: frozenset[str]


@dataclass(frozen=True)
class Channel:
    """One integration emitting one canonical type: everything needed to draw such an event."""

    integration: dict[str, str]
    canonical_type: str
    spellings: tuple[str, ...]
    direction: str
    api_base: str
    raw_statuses: dict[str, tuple[str, ...]]
    failure_from_http_status: bool
    outcomes: dict[str, tuple[Outcome, ...]]
    parameters: tuple[str, ...]
    details: tuple[str, ...]

    @property
    def integration_id(self) -> str:
        return self.integration["id"]


@dataclass(frozen=True)
class Catalog:
    """The simulated integrations, ready to draw from."""

    channels: dict[str, tuple[Channel, ...]]
    integration_ids_by_family: dict[str, tuple[str, ...]]
    secret_parameters: tuple[str, ...]


# ---------------------------------------------------------------- public API


def simulate_events_with_truth(
    count: int,
    *,
    accounts: int = 5,
    seed: int = 0,
    start: datetime | None = None,
    spacing_ms: int = 50,
    failing_integration: str | None = None,
    failure_rate: float | None = None,
) -> Iterator[tuple[Event, Truth]]:
    """``count`` pairs of (raw event, truth): truth is ``{"status": ..., "type": ...}`` in canonical words.

    Events are about ``spacing_ms`` apart, jittered within that gap so time
    never goes backwards, from ``start`` (default: so the last one lands about
    now). ``failure_rate`` makes ``failing_integration`` fail that often while
    the rest keep the normal mix; without ``failing_integration`` it applies to
    every integration. Arguments are checked now, not at the first ``next()``.
    """
    catalog = _load_catalog()
    _check_arguments(catalog, count, accounts, spacing_ms, failing_integration, failure_rate)
    return _generate(
        catalog,
        count=count,
        accounts=accounts,
        rng=random.Random(seed),
        first_at=_first_timestamp(start, count, spacing_ms),
        spacing_ms=spacing_ms,
        failing_integration=failing_integration,
        failure_rate=failure_rate,
    )


def simulate_events(
    count: int,
    *,
    accounts: int = 5,
    seed: int = 0,
    start: datetime | None = None,
    spacing_ms: int = 50,
    failing_integration: str | None = None,
    failure_rate: float | None = None,
) -> Iterator[Event]:
    """``count`` raw events, each a dict with exactly the fields of ``raw_event.avsc``."""
    pairs = simulate_events_with_truth(
        count,
        accounts=accounts,
        seed=seed,
        start=start,
        spacing_ms=spacing_ms,
        failing_integration=failing_integration,
        failure_rate=failure_rate,
    )
    return (event for event, _ in pairs)


@lru_cache(maxsize=None)
def _load_catalog() -> Catalog:
    """The simulated integrations, read and checked once per process."""
    data = json.loads(INTEGRATIONS_FILE.read_text())
    integrations = data["integrations"]
    channels = {integration["id"]: tuple(_channels_of(integration, data)) for integration in integrations}
    for integration_channels in channels.values():
        for channel in integration_channels:
            _check_renders(channel, data["secret_parameters"])
    families = {
        family: tuple(integration["id"] for integration in integrations if integration["family"] == family)
        for family in data["families"]
    }
    return Catalog(channels, families, tuple(data["secret_parameters"]))


# ---------------------------------------------------------------- the draw


def _generate(
    catalog: Catalog,
    *,
    count: int,
    accounts: int,
    rng: random.Random,
    first_at: datetime,
    spacing_ms: int,
    failing_integration: str | None,
    failure_rate: float | None,
) -> Iterator[tuple[Event, Truth]]:
    connections = _connect_accounts(rng, catalog, accounts, failing_integration)
    cut_points = _status_cut_points(catalog, failing_integration, failure_rate)
    for index in range(count):
        account_id, channels = _any(rng, connections)
        channel = _any(rng, channels)
        status = _draw_status(rng, cut_points[channel.integration_id])
        occurred_at = first_at + timedelta(milliseconds=index * spacing_ms + int(rng.random() * spacing_ms))
        event = _draw_event(rng, catalog, account_id, channel, status, occurred_at)
        yield event, {"status": status, "type": channel.canonical_type}


def _connect_accounts(
    rng: random.Random, catalog: Catalog, accounts: int, failing_integration: str | None
) -> list[tuple[str, tuple[Channel, ...]]]:
    """Each account's id and the channels of the few integrations it connected.

    If the draw left the failing integration unconnected, the first account
    connects it too: a forced failure that nobody can see is useless.
    """
    connected: list[list[str]] = []
    for _ in range(accounts):
        ids: list[str] = []
        for family, (fewest, most) in CONNECTIONS_PER_FAMILY.items():
            ids.extend(rng.sample(catalog.integration_ids_by_family[family], rng.randint(fewest, most)))
        connected.append(ids)
    if failing_integration is not None and not any(failing_integration in ids for ids in connected):
        connected[0].append(failing_integration)
    return [
        (f"acct-{number:04d}", tuple(channel for i in ids for channel in catalog.channels[i]))
        for number, ids in enumerate(connected, start=1)
    ]


def _status_cut_points(
    catalog: Catalog, failing_integration: str | None, failure_rate: float | None
) -> dict[str, tuple[float, float]]:
    """Per integration, where one uniform draw stops meaning failure, then info (the rest is success).

    ``failure_rate`` applies to ``failing_integration``, or to every
    integration when none is named; everyone else keeps ``STATUS_MIX``.
    """
    normal = _cut_points(STATUS_MIX[FAILURE])
    forced = normal if failure_rate is None else _cut_points(failure_rate)
    return {
        integration_id: forced if failing_integration in (None, integration_id) else normal
        for integration_id in catalog.channels
    }


def _cut_points(failure_share: float) -> tuple[float, float]:
    """Failure at ``failure_share``; info and success split the rest in their normal proportion."""
    info_share = STATUS_MIX[INFO] * (1 - failure_share) / (STATUS_MIX[INFO] + STATUS_MIX[SUCCESS])
    return failure_share, failure_share + info_share


def _draw_status(rng: random.Random, cut_points: tuple[float, float]) -> str:
    draw = rng.random()
    return FAILURE if draw < cut_points[0] else INFO if draw < cut_points[1] else SUCCESS


def _draw_event(
    rng: random.Random,
    catalog: Catalog,
    account_id: str,
    channel: Channel,
    status: str,
    occurred_at: datetime,
) -> Event:
    """One raw event: the outcome's wording filled with this event's own ids, names and amounts."""
    event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    outcome = _any(rng, channel.outcomes[status])
    facts = _Facts(rng, channel, occurred_at)
    return {
        "event_id": event_id,
        "account_id": account_id,
        "integration": dict(channel.integration),
        "occurred_at": occurred_at,
        "type": _any(rng, channel.spellings),
        "direction": channel.direction,
        "status": _raw_status(rng, channel, outcome),
        "message": _render(outcome.message, facts),
        "result": _render(outcome.result, facts),
        "parameters": _parameters(rng, catalog, channel, outcome, facts),
        "details": _details(rng, channel, outcome, facts),
    }


def _raw_status(rng: random.Random, channel: Channel, outcome: Outcome) -> str:
    """The status in the platform's own vocabulary; HTTP-style platforms report a failure's code."""
    if outcome.http_status and channel.failure_from_http_status and outcome.status == FAILURE:
        return outcome.http_status
    return _any(rng, channel.raw_statuses[outcome.status])


def _render(template: str | None, facts: _Facts) -> str | None:
    """A message or result with its placeholders filled; ``None`` and ``""`` stay as they are."""
    return template.format_map(facts) if template else template


def _parameters(
    rng: random.Random, catalog: Catalog, channel: Channel, outcome: Outcome, facts: _Facts
) -> dict[str, str]:
    """The values the integration sent; now and then one that looks secret, for redaction to catch."""
    parameters = _values(facts, channel.parameters, outcome)
    if rng.random() < SECRET_PARAMETER_RATE:
        secret = _any(rng, catalog.secret_parameters)
        parameters[secret] = facts[secret]
    return parameters


def _details(rng: random.Random, channel: Channel, outcome: Outcome, facts: _Facts) -> str | None:
    """Extra metadata as JSON text (the schema keeps it free-form); some integrations send none."""
    if rng.random() < MISSING_DETAILS_RATE:
        return None
    return json.dumps(_values(facts, channel.details, outcome))


def _values(facts: _Facts, names: tuple[str, ...], outcome: Outcome) -> dict[str, str]:
    """This event's values for ``names``, less those the outcome says the integration left out."""
    return {name: facts[name] for name in names if name not in outcome.without_parameters}


# ---------------------------------------------------------------- per-event values


def _any(rng: random.Random, options: Sequence[Any]) -> Any:
    """What ``rng.choice`` does, several times faster: an event takes a dozen such draws."""
    return options[int(rng.random() * len(options))]


def _between(rng: random.Random, low: int, high: int) -> int:
    """What ``rng.randint`` does (both ends included), several times faster."""
    return low + int(rng.random() * (high - low + 1))


class _Facts(dict):
    """The variable parts of one event (names, ids, amounts...), each drawn on first use and then kept.

    Parameters, message, result and details all read from here, so an error
    message names the same order number and email as the parameters do, and
    nothing an event does not use is drawn.
    """

    __slots__ = ("rng", "channel", "occurred_at")

    def __init__(self, rng: random.Random, channel: Channel, occurred_at: datetime) -> None:
        super().__init__()
        self.rng = rng
        self.channel = channel
        self.occurred_at = occurred_at

    def __missing__(self, name: str) -> str:
        value = self[name] = _FACT_MAKERS[name](self)
        return value


_FIRST_NAMES = ("Jane", "John", "Maria", "Wei", "Aisha", "Lucas", "Olivia", "Mateo", "Priya", "Noah")
_LAST_NAMES = ("Doe", "Smith", "Garcia", "Chen", "Okafor", "Novak", "Patel", "Silva", "Kim", "Rossi")
_EMAIL_DOMAINS = ("example.com", "example.org", "shop.test", "mail.test")
_CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP", "CAD", "AUD")
_SKU_STEMS = ("WIDGET", "GADGET", "TSHIRT", "HOODIE", "MUG", "CABLE", "POSTER", "SOCKS")
_CODE_ALPHABET = string.ascii_uppercase + string.digits
_STRIPE_ALPHABET = string.ascii_letters + string.digits
_ENDPOINTS = ("/api/v2/referrals", "/api/v2/members", "/api/v2/rewards", "/api/v2/referrals/status")
_METHODS = ("POST", "POST", "GET", "PUT")
_SOURCES = ("checkout", "signup_form", "share_link", "email_invite")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
)
_CONNECTOR_VERSIONS = ("3.4.1", "3.5.0", "4.0.2")
_TIMEOUTS_MS = ("10000", "30000", "60000")
_ATTEMPTS = ("1", "1", "1", "2", "3")
_PASSWORDS = ("hunter2", "Summer2025!", "P@ssw0rd123", "letmein-42")
_TEST_CARD_NUMBERS = ("4242424242424242", "5555555555554444", "378282246310005")
# Where a type's records live on a platform's API, and which fact identifies one.
_RESOURCES = {
    "one_click_access": ("members", "member_id"),
    "api_call": ("referrals", "referral_code"),
    "integration_script": ("referrals", "referral_code"),
    "conversion": ("conversions", "order_number"),
    "order": ("orders", "order_number"),
    "customer": ("customers", "customer_id"),
    "product": ("products", "product_id"),
}


def _resource_path(facts: _Facts) -> str:
    collection, id_fact = _RESOURCES[facts.channel.canonical_type]
    return f"{collection}/{facts[id_fact]}"


def _expired_at(facts: _Facts) -> str:
    """A moment shortly before the event, as platforms print token expiry times."""
    moment = facts.occurred_at - timedelta(seconds=_between(facts.rng, 60, 86_400))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex(bits: int) -> Callable[[_Facts], str]:
    return lambda facts: f"{facts.rng.getrandbits(bits):0{bits // 4}x}"


def _pick(options: tuple[str, ...]) -> Callable[[_Facts], str]:
    return lambda facts: _any(facts.rng, options)


def _number(low: int, high: int) -> Callable[[_Facts], str]:
    return lambda facts: str(_between(facts.rng, low, high))


def _money(low: float, high: float) -> Callable[[_Facts], str]:
    return lambda facts: f"{facts.rng.uniform(low, high):.2f}"


_FACT_MAKERS: dict[str, Callable[[_Facts], str]] = {
    "first_name": _pick(_FIRST_NAMES),
    "last_name": _pick(_LAST_NAMES),
    "referral_name": lambda f: f"{f['first_name']} {f['last_name']}",
    "email": lambda f: f"{f['first_name']}.{f['last_name']}@{_any(f.rng, _EMAIL_DOMAINS)}".lower(),
    "member_id": _number(1_000, 99_999),
    "referral_code": lambda f: "".join(f.rng.choices(_CODE_ALPHABET, k=6)),
    "ip_address": lambda f: f"203.0.113.{_between(f.rng, 1, 254)}",
    "internal_ip": lambda f: f"10.0.{_between(f.rng, 0, 15)}.{_between(f.rng, 2, 254)}",
    "user_agent": _pick(_USER_AGENTS),
    "source": _pick(_SOURCES),
    "endpoint": _pick(_ENDPOINTS),
    "method": _pick(_METHODS),
    "page_url": lambda f: f"https://www.example.com/checkout/thank-you?order={f['order_number']}",
    "order_number": _number(1_001, 99_999),
    "customer_id": _number(10_000, 999_999),
    "existing_id": _number(10_000, 999_999),
    "product_id": _number(1_000, 99_999),
    "sku": lambda f: f"{_any(f.rng, _SKU_STEMS)}-{_between(f.rng, 1, 999)}",
    "quantity": _number(1, 5),
    "amount": _money(5, 900),
    "price": _money(2, 400),
    "negative_amount": lambda f: f"-{f.rng.uniform(0.5, 100):.2f}",
    "currency": _pick(_CURRENCIES),
    "stock_level": _number(0, 500),
    "retry_after": _number(1, 120),
    "timeout_ms": _pick(_TIMEOUTS_MS),
    "expired_at": _expired_at,
    "platform": lambda f: f.channel.integration["platform"],
    "api_base": lambda f: f.channel.api_base,
    "resource_path": _resource_path,
    "request_id": _hex(64),
    "stripe_id": lambda f: "".join(f.rng.choices(_STRIPE_ALPHABET, k=14)),
    "line_number": _number(100, 9_999),
    "attempt": _pick(_ATTEMPTS),
    "duration_ms": _number(40, 4_000),
    "connector_version": _pick(_CONNECTOR_VERSIONS),
    "api_key": lambda f: f"rk_live_{f.rng.getrandbits(128):032x}",
    "password": _pick(_PASSWORDS),
    "access_token": lambda f: f"shpat_{f.rng.getrandbits(128):032x}",
    "client_secret": _hex(160),
    "card_number": _pick(_TEST_CARD_NUMBERS),
}


# ---------------------------------------------------------------- loading and checks


def _channels_of(integration: dict[str, Any], data: dict[str, Any]) -> Iterator[Channel]:
    vocabulary = data["status_vocabularies"][integration["statuses"]]
    family = data["families"][integration["family"]]
    directions = integration.get("direction_by_type", {})
    for canonical_type, spellings in integration["types"].items():
        yield Channel(
            integration={key: integration[key] for key in ("id", "name", "platform")},
            canonical_type=canonical_type,
            spellings=tuple(spellings),
            direction=directions.get(canonical_type, integration["direction"]),
            api_base=integration.get("api_base", ""),
            raw_statuses={status: tuple(vocabulary[status]) for status in STATUS_MIX},
            failure_from_http_status=vocabulary.get("failure_from_http_status", False),
            outcomes=_outcomes_for(data["outcomes"], integration, canonical_type),
            parameters=tuple(data["parameters"][canonical_type]),
            details=tuple(family["details"]),
        )


def _outcomes_for(
    outcomes: list[dict[str, Any]], integration: dict[str, Any], canonical_type: str
) -> dict[str, tuple[Outcome, ...]]:
    """The outcomes open to one integration's events of one type, by status, each repeated by its weight."""
    platform = integration["platform"]
    by_status: dict[str, list[Outcome]] = {status: [] for status in STATUS_MIX}
    for entry in outcomes:
        if canonical_type not in entry["types"] or platform not in entry.get("platforms", [platform]):
            continue
        outcome = Outcome(
            status=entry["status"],
            message=entry["message"],
            result=entry["result"],
            http_status=entry.get("http_status"),
            without_parameters=frozenset(entry.get("without_parameters", ())),
        )
        by_status[outcome.status].extend([outcome] * entry.get("weight", 1))
    missing = [status for status, options in by_status.items() if not options]
    if missing:
        where = f"{integration['id']} {canonical_type}"
        raise ValueError(f"{INTEGRATIONS_FILE.name}: {where} has no {', '.join(missing)} outcome")
    return {status: tuple(options) for status, options in by_status.items()}


def _check_renders(channel: Channel, secret_parameters: list[str]) -> None:
    """Fail at load, not mid-stream, if the data names a value the simulator cannot make."""
    unknown = {*channel.parameters, *channel.details, *secret_parameters} - _FACT_MAKERS.keys()
    if unknown:
        raise ValueError(f"{INTEGRATIONS_FILE.name}: no way to make {sorted(unknown)}")
    facts = _Facts(random.Random(0), channel, datetime(2026, 1, 1, tzinfo=timezone.utc))
    try:
        for outcome in {o for options in channel.outcomes.values() for o in options}:
            _render(outcome.message, facts)
            _render(outcome.result, facts)
    except (KeyError, ValueError, IndexError) as exc:
        where = f"{channel.integration_id} {channel.canonical_type}"
        raise ValueError(f"{INTEGRATIONS_FILE.name}: {where} outcome does not render: {exc!r}") from exc


def _check_arguments(
    catalog: Catalog,
    count: int,
    accounts: int,
    spacing_ms: int,
    failing_integration: str | None,
    failure_rate: float | None,
) -> None:
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if accounts < 1:
        raise ValueError(f"accounts must be >= 1, got {accounts}")
    if spacing_ms < 0:
        raise ValueError(f"spacing_ms must be >= 0, got {spacing_ms}")
    if failing_integration is not None and failing_integration not in catalog.channels:
        known = ", ".join(catalog.channels)
        raise ValueError(f"unknown integration {failing_integration!r}; known: {known}")
    if failing_integration is not None and failure_rate is None:
        raise ValueError("failing_integration needs a failure_rate")
    if failure_rate is not None and not 0 <= failure_rate <= 1:
        raise ValueError("failure_rate must be between 0 and 1")


def _first_timestamp(start: datetime | None, count: int, spacing_ms: int) -> datetime:
    """``start`` in UTC, cut to whole milliseconds (all timestamp-millis keeps); by default, ending now."""
    if start is None:
        start = datetime.now(timezone.utc) - timedelta(milliseconds=count * spacing_ms)
    elif start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start = start.astimezone(timezone.utc)
    return start.replace(microsecond=start.microsecond // 1000 * 1000)
