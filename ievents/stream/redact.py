"""Secrets never reach storage: what looks like one is replaced by a marker before the event is written.

Two signals, because integrations are careless in both directions: a key that
names a secret (``password``, ``api_key``, ``Authorization``...) hides its
value whatever it is, and a value that *is* a secret (a bearer token, a card
number that passes the Luhn check) is hidden whatever its key. Nothing else is
changed, so support staff still see every other parameter as sent.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_KEY_WORDS = (
    r"pass(word|wd|phrase)?$|secret|token|api[_\-. ]?key|apikey|auth(orization)?$|cookie|session[_\-. ]?id"
    r"|credential|private[_\-. ]?key|signature|cvv|cvc|card[_\-. ]?number|^pan$"
)
_SECRET_KEY = re.compile(_SECRET_KEY_WORDS, re.IGNORECASE)
_BEARER = re.compile(r"\b(?:bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE)
# A run of digits, spaces and dashes; _mask_card decides whether it is a card (13-19 digits, Luhn-valid).
_CARD_CANDIDATE = re.compile(r"\d[\d -]{11,}\d")
# One cheap search that every text containing a secret value matches (most texts do not, and skip the rest).
_MAYBE_SECRET_VALUE = re.compile(r"(?:bearer|basic)\s|\d[\d -]{11}", re.IGNORECASE)
# Substrings one of which every secret key name contains, searched in lower-cased text: far cheaper than
# a case-insensitive regex or json.loads over every event's details.
_SECRET_KEY_HINTS = re.compile("pass|secret|token|key|auth|cookie|session|credential|signature|cvv|cvc|card|pan")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (and most random digit runs do not)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match) -> str:
    digits = match.group().replace(" ", "").replace("-", "")
    return REDACTED if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def redact_text(text: str) -> str:
    """``text`` with bearer/basic credentials and Luhn-valid card numbers masked."""
    if not text or not _MAYBE_SECRET_VALUE.search(text):
        return text
    masked = _BEARER.sub(REDACTED, text)
    return _CARD_CANDIDATE.sub(_mask_card, masked)


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_parameters(parameters: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The parameters with secrets masked, and the sorted names of the parameters that were changed."""
    cleaned, redacted = {}, []
    for key, value in parameters.items():
        new_value = REDACTED if is_secret_key(key) else redact_text(value)
        if new_value != value:
            redacted.append(key)
        cleaned[key] = new_value
    return (cleaned, sorted(redacted)) if redacted else (parameters, [])


def _redact_json(value: Any, path: str, redacted: list[str]) -> Any:
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            child = f"{path}.{key}"
            if is_secret_key(str(key)) and item not in (None, "", REDACTED):
                redacted.append(child)
                result[key] = REDACTED
            else:
                result[key] = _redact_json(item, child, redacted)
        return result
    if isinstance(value, list):
        return [_redact_json(item, f"{path}[{index}]", redacted) for index, item in enumerate(value)]
    if isinstance(value, str):
        masked = redact_text(value)
        if masked != value:
            redacted.append(path)
        return masked
    return value


def _maybe_secret_details(details: str) -> bool:
    """False only when ``details`` cannot hold a secret key or value, so json.loads can be skipped."""
    return bool(_SECRET_KEY_HINTS.search(details.lower()) or _MAYBE_SECRET_VALUE.search(details))


def redact_details(details: str | None) -> tuple[str | None, list[str]]:
    """Details (free JSON, or free text) with secrets masked, and the paths (``details.x.y``) masked."""
    if not details or not _maybe_secret_details(details):
        return details, []
    try:
        parsed = json.loads(details)
    except ValueError:
        masked = redact_text(details)
        return masked, (["details"] if masked != details else [])
    redacted: list[str] = []
    cleaned = _redact_json(parsed, "details", redacted)
    return (json.dumps(cleaned, ensure_ascii=False), redacted) if redacted else (details, [])


def redact(parameters: dict[str, str], details: str | None) -> tuple[dict[str, str], str | None, list[str]]:
    """Parameters and details with secrets masked, and every parameter name / details path that was."""
    cleaned_parameters, parameter_keys = redact_parameters(parameters)
    cleaned_details, detail_paths = redact_details(details)
    return cleaned_parameters, cleaned_details, parameter_keys + detail_paths
