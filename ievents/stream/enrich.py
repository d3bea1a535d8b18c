"""One raw event in, one enriched event (or the reason it cannot be) out. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ievents.stream.classify import classify_type, normalise_status
from ievents.stream.redact import redact_parameters


@dataclass(frozen=True)
class Rejected:
    """Why a raw event goes to the dead-letter topic instead of the log."""

    reason: str
    detail: str


def validate(raw: dict[str, Any]) -> Rejected | None:
    """Checks the schema cannot express: identifiers that must not be blank."""
    for field, value in (("account_id", raw["account_id"]), ("integration.id", raw["integration"]["id"])):
        if not value.strip():
            return Rejected("missing_field", f"{field} is empty")
    return None


def enrich(raw: dict[str, Any], *, partition: int, offset: int, processed_at: datetime) -> dict[str, Any]:
    """The enriched event (``enriched_event.avsc``) for a decoded, valid raw event."""
    parameters, redacted = redact_parameters(raw["parameters"])
    return {
        **raw,
        "type": classify_type(raw["type"]),
        "type_raw": raw["type"],
        "status": normalise_status(raw["status"], raw["message"]),
        "status_raw": raw["status"],
        "parameters": parameters,
        "redacted_parameters": redacted,
        "processed_at": processed_at,
        "source_partition": partition,
        "source_offset": offset,
    }
