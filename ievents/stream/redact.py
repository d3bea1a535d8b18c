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

# "pass" and "auth" only as a whole word: a lower-case letter after them ("passenger", "author") is another
# word, anything else ("password2", "password_confirmation", "passwordHash", "authHeader") still names a secret.
_SECRET_KEY_WORDS = (
    r"pass(word|wd|phrase)?(?-i:(?![a-z]))|pwd|secret|token|api[_\-. ]?key|apikey|auth(orization)?(?-i:(?![a-z]))"
    r"|cookie|session[_\-. ]?id|credential|private[_\-. ]?key|signature|cvv|cvc|card[_\-. ]?number|^pan$"
)
_SECRET_KEY = re.compile(_SECRET_KEY_WORDS, re.IGNORECASE)
_BEARER = re.compile(r"\b(?:bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE)
# A run of digits, spaces and dashes; _mask_card decides whether it is a card (13-19 digits, Luhn-valid).
_CARD_CANDIDATE = re.compile(r"\d[\d -]{11,}\d")
# One cheap search that every text containing a secret value matches (most texts do not, and skip the rest).
_MAYBE_SECRET_VALUE = re.compile(r"(?:bearer|basic)\s|\d[\d -]{11}", re.IGNORECASE)
# Substrings one of which every secret key name contains, searched in lower-cased text: far cheaper than
# a case-insensitive regex or json.loads over every event's details.
_SECRET_KEY_HINTS = re.compile("pass|pwd|secret|token|key|auth|cookie|session|credential|signature|cvv|cvc|card|pan")
# A name and its value inside text that is not a JSON object we can walk: a URL's or form body's
# ``api_key=...``, a header line's ``X-Api-Key: ...``, a Python dict's ``'password': '...'``, JSON cut short or
# too odd to parse. The value is masked when the name is a secret's (``is_secret_key``).
_PAIR = re.compile(
    r"""(?<![\w.\-])(?P<key>[A-Za-z_][\w.\-]{0,63})(?P<sep>["']?\s*(?:=|:(?!//))\s*)"""
    r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s&,;"'<>(){}\[\]]+)"""
)
# Where a secret's name may be followed by "=" or ":" (the cheap test before _PAIR runs).
_MAYBE_SECRET_PAIR = re.compile(
    r"(?:pass|pwd|secret|token|key|auth|cookie|session|credential|signature|cvv|cvc|card|pan)[\w.\-]*[\"']?\s*[=:]",
    re.IGNORECASE,
)


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


def _mask_pair(match: re.Match) -> str:
    value = match.group("value")
    if not is_secret_key(match.group("key")) or value.strip("\"'") in ("", REDACTED):
        return match.group()
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def redact_text(text: str) -> str:
    """``text`` with bearer/basic credentials, Luhn-valid card numbers and ``<secret name>=<value>`` /
    ``<secret name>: <value>`` pairs masked."""
    if not text:
        return text
    masked = text
    if _MAYBE_SECRET_VALUE.search(text):
        masked = _CARD_CANDIDATE.sub(_mask_card, _BEARER.sub(REDACTED, text))
    if ("=" in masked or ":" in masked) and _MAYBE_SECRET_PAIR.search(masked):
        masked = _PAIR.sub(_mask_pair, masked)
    return masked


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
    redacted: list[str] = []
    try:
        parsed = json.loads(details)
    except RecursionError:
        # Nested deeper than can be walked: a secret could sit anywhere in it, so none of it is kept.
        return REDACTED, ["details"]
    except ValueError:
        masked = redact_text(details)
        return masked, (["details"] if masked != details else [])
    try:
        cleaned = _redact_json(parsed, "details", redacted)
        if not redacted:
            return details, []
        text = json.dumps(cleaned, ensure_ascii=False)
    except RecursionError:
        return REDACTED, ["details"]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in the JSON) cannot be UTF-8: keep it escaped
        text = json.dumps(cleaned)
    return text, redacted


def redact(parameters: dict[str, str], details: str | None) -> tuple[dict[str, str], str | None, list[str]]:
    """Parameters and details with secrets masked, and every parameter name / details path that was."""
    cleaned_parameters, parameter_keys = redact_parameters(parameters)
    cleaned_details, detail_paths = redact_details(details)
    return cleaned_parameters, cleaned_details, parameter_keys + detail_paths
