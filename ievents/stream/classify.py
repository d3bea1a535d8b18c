"""Pure decisions that turn what an integration reported into one vocabulary.

The rules are data (``rules/*.json``) so a user can teach the pipeline a new
platform's spelling without touching code; these functions only apply them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

RULES_DIR = Path(__file__).parent / "rules"

INFO, SUCCESS, FAILURE = "info", "success", "failure"
OTHER_TYPE = "other"

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s._/\-:]+")
_HTTP_CODE = re.compile(r"^(?:http\s*)?([1-5]\d\d)\b")


@dataclass(frozen=True)
class StatusRules:
    words: dict[str, str]
    info_messages: tuple[str, ...]


@dataclass(frozen=True)
class TypeRules:
    platform_types: dict[str, dict[str, str]]
    patterns: tuple[tuple[str, re.Pattern], ...]


@lru_cache(maxsize=None)
def type_rules(path: Path = RULES_DIR / "types.json") -> TypeRules:
    data = json.loads(path.read_text())
    return TypeRules(
        platform_types={
            platform.lower(): {raw.lower(): canonical for raw, canonical in names.items()}
            for platform, names in data["platform_types"].items()
        },
        patterns=tuple((rule["type"], re.compile("|".join(rule["patterns"]))) for rule in data["rules"]),
    )


@lru_cache(maxsize=None)
def status_rules(path: Path = RULES_DIR / "statuses.json") -> StatusRules:
    data = json.loads(path.read_text())
    words = {word: status for status in (SUCCESS, FAILURE, INFO) for word in data[status]}
    return StatusRules(words=words, info_messages=tuple(data["info_messages"]))


def _words(text: str) -> str:
    """``OneClickAccess`` / ``orders/create`` / ``no_referral-created`` -> spaced lower-case words."""
    return _SEPARATORS.sub(" ", _CAMEL_BOUNDARY.sub(" ", text)).strip().lower()


@lru_cache(maxsize=4096)
def classify_type(raw_type: str, platform: str | None = None) -> str:
    """The canonical type for an integration's own name of an event; ``other`` when no rule matches.

    A platform's own event names (Stripe's ``charge.succeeded`` is a conversion)
    are looked up first; the generic patterns cover everyone else.
    """
    rules = type_rules()
    specific = rules.platform_types.get((platform or "").lower(), {}).get((raw_type or "").lower())
    if specific:
        return specific
    words = _words(raw_type or "")
    for canonical, pattern in rules.patterns:
        if pattern.search(words):
            return canonical
    return OTHER_TYPE


def normalise_status(raw_status: str | None, message: str | None = None, result: str | None = None) -> str:
    """``info`` | ``success`` | ``failure`` from a platform's status word or HTTP code.

    A platform's ``error`` is our ``failure``. The referral products' rule comes
    first: an event captured without creating anything (not a valid member
    referral link, a fraud rule fired) is ``info`` whatever status word came
    with it, whether the message or the result says so. A status word we do not
    know defers to the result (``{"status": "done", "result": "failed"}``), and
    when neither is known the event is ``info``: an unknown word is not
    evidence of success or failure.
    """
    said = f"{message or ''} {result or ''}".lower()
    if any(phrase in said for phrase in status_rules().info_messages):
        return INFO
    return status_of_word(raw_status) or status_of_word(result) or INFO


@lru_cache(maxsize=4096)
def status_of_word(reported: str | None) -> str | None:
    """The canonical status a status word or HTTP code stands for; ``None`` when it is not one we know."""
    status = _words(reported or "")
    code = _HTTP_CODE.match(status)
    if code:
        value = int(code.group(1))
        return SUCCESS if 200 <= value < 300 else FAILURE if value >= 400 else INFO
    return status_rules().words.get(status)
