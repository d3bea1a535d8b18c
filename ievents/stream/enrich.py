"""One raw event in, one enriched event (or the reason it cannot be) out. No I/O.

The steps run in this order, each a pure function of its own module:
validate -> classify type -> normalise status -> normalise the error message
-> fill integration metadata from the catalog -> redact secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from ievents.stream.classify import RULES_DIR, SUCCESS, classify_type, normalise_status
from ievents.stream.messages import normalise_error_message
from ievents.stream.redact import redact

EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=timezone.utc)

# Which product a canonical type belongs to, for integrations the catalog does not know.
FAMILY_OF_TYPE = {
    "one_click_access": "referral", "api_call": "referral", "integration_script": "referral", "conversion": "referral",
    "order": "commerce", "customer": "commerce", "product": "commerce",
}


@dataclass(frozen=True)
class Rejected:
    """Why a raw event goes to the dead-letter topic instead of the log."""

    reason: str
    detail: str


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    platform: str
    family: str
    direction: str


@lru_cache(maxsize=None)
def integration_catalog(path: Path = RULES_DIR / "integrations.json") -> dict[str, CatalogEntry]:
    return {key: CatalogEntry(**entry) for key, entry in json.loads(path.read_text())["integrations"].items()}


def validate(
    raw: dict[str, Any], *, now: datetime, max_future: timedelta, max_age: timedelta | None = None,
) -> Rejected | None:
    """Checks the Avro schema cannot express: blank identifiers and impossible timestamps.

    ``max_age`` is the storage's retention: an event older than that would be dropped by the table's TTL as it
    arrives, neither stored nor dead-lettered, so it is rejected here, where it is counted and kept.
    """
    for field, value in (("account_id", raw["account_id"]), ("integration.id", raw["integration"]["id"])):
        if not value.strip():
            return Rejected("missing_field", f"{field} is empty")
    occurred_at = raw["occurred_at"]
    if occurred_at < EARLIEST_EVENT:
        return Rejected("invalid_timestamp", f"occurred_at {occurred_at.isoformat()} is before 2000")
    if max_age is not None and occurred_at < now - max_age:
        return Rejected(
            "invalid_timestamp", f"occurred_at {occurred_at.isoformat()} is older than the retention of {max_age.days} days")
    if occurred_at > now + max_future:
        return Rejected("invalid_timestamp", f"occurred_at {occurred_at.isoformat()} is more than {max_future} ahead")
    return None


def fill_integration(integration: dict[str, str], direction: str, canonical_type: str) -> tuple[dict[str, str], str, str]:
    """Integration name/platform, direction and product family: the event's own values win, the catalog fills gaps."""
    known = integration_catalog().get(integration["id"])
    if known is None:
        return integration, direction, FAMILY_OF_TYPE.get(canonical_type, "")
    filled = {
        "id": integration["id"],
        "name": integration["name"] or known.name,
        "platform": integration["platform"] or known.platform,
    }
    return filled, (direction if direction != "none" else known.direction), known.family


def enrich(raw: dict[str, Any], *, partition: int, offset: int, processed_at: datetime) -> dict[str, Any]:
    """The enriched event (``enriched_event.avsc``) for a decoded, valid raw event."""
    integration = raw["integration"]
    canonical_type = classify_type(raw["type"], integration["platform"])
    status = normalise_status(raw["status"], raw["message"], raw["result"])
    normalised = normalise_error_message(raw["message"], integration["platform"])
    integration, direction, family = fill_integration(integration, raw["direction"], canonical_type)
    parameters, details, redacted = redact(raw["parameters"], raw["details"])
    return {
        **raw,
        "integration": integration,
        "direction": direction,
        "product_family": family,
        "type": canonical_type,
        "type_raw": raw["type"],
        "status": status,
        "status_raw": raw["status"],
        "message_template": normalised.template,
        # Every message gets a template (so any message can be grouped); only non-successes have an error category.
        "error_category": "" if status == SUCCESS else normalised.category,
        "error_fingerprint": normalised.fingerprint,
        "parameters": parameters,
        "details": details,
        "redacted_parameters": redacted,
        "processed_at": processed_at,
        "source_partition": partition,
        "source_offset": offset,
    }
