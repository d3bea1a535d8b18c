"""Secrets never reach storage: parameters whose names say they hold one are replaced by a marker."""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_\-. ]?key|auth(orization)?|cookie|session|credential|private[_\-. ]?key|cvv|card[_\-. ]?number",
    re.IGNORECASE,
)


def redact_parameters(parameters: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The parameters with secret values masked, and the sorted names of those masked."""
    redacted = sorted(key for key in parameters if _SECRET_KEY.search(key))
    if not redacted:
        return parameters, []
    return {key: REDACTED if key in redacted else value for key, value in parameters.items()}, redacted
