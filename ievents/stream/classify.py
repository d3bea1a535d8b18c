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


@lru_cache(maxsize=None)
def type_rules(path: Path = RULES_DIR / "types.json") -> tuple[tuple[str, re.Pattern], ...]:
    rules = json.loads(path.read_text())["rules"]
    return tuple((rule["type"], re.compile("|".join(rule["patterns"]))) for rule in rules)


@lru_cache(maxsize=None)
def status_rules(path: Path = RULES_DIR / "statuses.json") -> StatusRules:
    data = json.loads(path.read_text())
    words = {word: status for status in (SUCCESS, FAILURE, INFO) for word in data[status]}
    return StatusRules(words=words, info_messages=tuple(data["info_messages"]))


def _words(text: str) -> str:
    """``OneClickAccess`` / ``orders/create`` / ``no_referral-created`` -> spaced lower-case words."""
    return _SEPARATORS.sub(" ", _CAMEL_BOUNDARY.sub(" ", text)).strip().lower()


@lru_cache(maxsize=4096)
def classify_type(raw_type: str) -> str:
    """The canonical type for an integration's own name of an event; ``other`` when no rule matches."""
    words = _words(raw_type or "")
    for canonical, pattern in type_rules():
        if pattern.search(words):
            return canonical
    return OTHER_TYPE


def normalise_status(raw_status: str | None, message: str | None = None) -> str:
    """``info`` | ``success`` | ``failure`` from a platform's status word or HTTP code.

    A platform's ``error`` is our ``failure``. The referral products' rule comes
    first: an event captured without creating anything (not a valid member
    referral link, a fraud rule fired) is ``info`` whatever status word came
    with it. An unknown word is not evidence of success or failure, so it is
    ``info`` too.
    """
    rules = status_rules()
    lowered_message = (message or "").lower()
    if any(phrase in lowered_message for phrase in rules.info_messages):
        return INFO
    status = _words(raw_status or "")
    code = _HTTP_CODE.match(status)
    if code:
        value = int(code.group(1))
        return SUCCESS if 200 <= value < 300 else FAILURE if value >= 400 else INFO
    return rules.words.get(status, INFO)
