"""Error messages as platforms word them -> one template, one category, one fingerprint.

The log groups failures by what went wrong, not by which order or email it
went wrong for, so the variable parts of a message (ids, numbers, emails,
URLs, quoted values, timestamps, IPs, amounts, names) are masked with typed
placeholders, the way log-template miners (Drain) and error groupers (Sentry)
do it, while the platform's own wording is kept as is. The message as
reported is stored beside its template by the caller: users always see what
the platform said; the template is only for grouping and counting.

Everything here is a pure function of ``(message, platform)``: any worker,
any process, same input -> same template, category and fingerprint. The
category rules are data (``rules/error_categories.json``) so a user can teach
the pipeline a new platform's wording without touching code.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "CATEGORIES",
    "MAX_TEMPLATE_CHARS",
    "NormalisedMessage",
    "UNKNOWN",
    "category_rules",
    "first_meaningful_line",
    "normalise_error_message",
]

RULES_DIR = Path(__file__).parent / "rules"

UNKNOWN = "unknown"
CATEGORIES = (
    "auth", "rate_limit", "validation", "not_found", "conflict", "timeout", "network",
    "upstream_error", "fraud_rule", "invalid_referral", "duplicate", UNKNOWN,
)

# One huge message (a whole HTML error page, a 1 MB stack trace) must not blow
# up storage or the grouping key: templates are cut to this many characters.
MAX_TEMPLATE_CHARS = 500
TRUNCATION_MARK = "…"
# Masking never needs more than this much of the chosen line to fill a capped
# template, so the regexes never scan more than this (bounded CPU per event).
_MAX_LINE_CHARS = 4 * MAX_TEMPLATE_CHARS
# Messages longer than this are normalised without the cache: the cache is
# bounded by entries, not bytes, and must not pin huge strings in memory.
_MAX_CACHED_CHARS = 2048
_FINGERPRINT_BYTES = 8  # 16 hex characters


@dataclass(frozen=True)
class NormalisedMessage:
    """What one platform message normalises to; every field is "" / () when there is no message.

    ``masked`` names the placeholder kinds in the template (``"email"``,
    ``"num"``...), in order of first appearance, each once: handy for
    debugging a grouping and for a UI that highlights what varied.
    """

    template: str
    category: str
    fingerprint: str
    masked: tuple[str, ...]


EMPTY = NormalisedMessage(template="", category="", fingerprint="", masked=())


# ---------------------------------------------------------------- category rules


# Where a rule may start matching: a word start (ASCII letters and digits
# only, so "_" and any non-ASCII character count as separators) or a camelCase
# hump ("Not" in "ObjectNotFound"). Refusing the middle of words up front is
# what makes a dozen rules of a dozen alternatives affordable per event.
_RULE_START = r"(?:(?<![A-Za-z0-9])|(?<=[a-z])(?=[A-Z]))"


@lru_cache(maxsize=None)
def category_rules(path: Path = RULES_DIR / "error_categories.json") -> tuple[tuple[str, re.Pattern], ...]:
    """The ordered (category, pattern) rules; first match wins. Unknown categories fail at load."""
    rules = json.loads(path.read_text())["rules"]
    compiled = []
    for rule in rules:
        if rule["category"] not in CATEGORIES:
            raise ValueError(f"{path.name}: unknown category {rule['category']!r}")
        body = "|".join(f"(?:{pattern})" for pattern in rule["patterns"])
        compiled.append((rule["category"], re.compile(f"{_RULE_START}(?i:{body})")))
    return tuple(compiled)


@lru_cache(maxsize=8192)
def _categorise(template: str) -> str:
    """The first matching rule's category.

    Cached by template: far fewer templates than messages exist, and trying
    every rule costs tens of microseconds the first time a template is seen.
    """
    for category, pattern in category_rules():
        if pattern.search(template):
            return category
    return UNKNOWN


# ---------------------------------------------------------------- first meaningful line

# Lines that are scaffolding around an error, never the error itself: stack
# frames (Java/.NET/JS "at ...", Python 'File "...", line N', PHP "#0 ..."),
# traceback headers, "... 12 more", PHP's "thrown in".
_BOILERPLATE = re.compile(
    r"""^(?:
        Traceback\ \(most\ recent\ call\ last\):?
      | at\s+(?:async\s+)?\S+(?:\s\[as\s[^\]]+\])?(?:\s*\(.*\)|:\d+(?::\d+)?)\s*$   # at Foo.bar(Foo.java:12) / at f (url:1:2)
      | at\s+\S+\s+in\s+\S.*                                       # .NET: at Foo.Bar() in C:\x.cs:line 12
      | at\s+<anonymous>.*
      | File\ ".*",\ line\ \d+.*
      | \#\d+\s+(?:\{main\}|\[internal\ function\].*|\S*[/\\]\S*\(\d+\):.*)   # PHP frame
      | from\s+\S+:\d+:in\s.*                                      # Ruby frame
      | \{main\}
      | Stack\ ?trace:?
      | \.\.\.\ \d+\ more
      | thrown\ in\ .*
      | -{3,}.*
    )$""",
    re.VERBOSE,
)
_PYTHON_TRACEBACK = "Traceback (most recent call last)"


def _is_boilerplate(stripped: str) -> bool:
    return bool(_BOILERPLATE.match(stripped))


def _python_exception_line(lines: list[str]) -> str | None:
    """The ``ExceptionType: message`` line of a Python traceback: its last unindented, non-frame line.

    Python prints the frames indented and the exception last (for chained
    exceptions, the last one printed is the one that escaped), so the line
    worth grouping by is at the bottom, not the top.
    """
    for line in reversed(lines):
        if not line.strip() or line[:1].isspace():
            continue
        stripped = line.strip()
        if _is_boilerplate(stripped) or stripped.startswith(("During handling", "The above exception")):
            continue
        return stripped
    return None


def _encodable(text: str) -> bool:
    """False when ``text`` holds a lone surrogate (JSON's ``"\\ud800"`` parses to one), which UTF-8 cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def first_meaningful_line(message: str) -> str:
    """The line of a (possibly multi-line) message that says what went wrong, whitespace collapsed.

    A pretty-printed JSON body is compacted to one line first (so it groups
    with the same body sent compact); a Python traceback yields its final
    exception line; otherwise it is the first line that is not blank or stack
    scaffolding. A short header line ending in ``:`` ("Error:") is joined with
    the line after it, which carries the actual reason.
    """
    text = message.strip()
    if text[:1] in "{[":
        try:
            compact = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: read it as text
            pass
        else:
            return compact if _encodable(compact) else json.dumps(json.loads(text), separators=(",", ":"))
    if "\n" not in text and "\r" not in text:
        return " ".join(text.split())
    lines = text.splitlines()
    if _PYTHON_TRACEBACK in text:
        found = _python_exception_line(lines)
        if found:
            return " ".join(found.split())
    stripped = [s for s in (line.strip() for line in lines) if s]
    meaningful = [s for s in stripped if not _is_boilerplate(s)] or stripped[:1]
    if not meaningful:
        return ""
    first = meaningful[0]
    if first.endswith(":") and len(first) <= 60 and len(meaningful) > 1:
        first = f"{first} {meaningful[1]}"
    return " ".join(first.split())


# ---------------------------------------------------------------- masking

_MONTH = (
    r"\b(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_WEEKDAY = r"\b(?:Mon(?:day)?|Tue(?:s(?:day)?)?|Wed(?:nesday)?|Thu(?:rs(?:day)?)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?),?\s"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp]\.?[Mm]\.?)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_CURRENCY_CODES = (
    "USD|EUR|GBP|CAD|AUD|NZD|JPY|CNY|CHF|SEK|NOK|DKK|PLN|CZK|HUF|BRL|MXN|INR|HKD|SGD|ZAR|"
    "AED|SAR|ILS|KRW|RUB|RON|BGN|ARS|CLP|THB|IDR|MYR"
)
_CODE_AHEAD = r"(?=[A-Za-z]{3}(?![A-Za-z]))"  # three letters, then the 35 codes
_CURRENCY_SIGN = r"(?:[$€£¥₹₩₽₺₪]|(?:US|CA|AU|NZ|HK|S|R)\$)"
_NUMBER = r"\d+(?:[.,\u202f\u00a0]\d+)*"
# An HTTP status is meaning, not a variable: "401 Unauthorized" and "404 Not
# Found" must never share a template. A 3-digit code is kept where its context
# says it is one (a reason phrase after it or before it, "HTTP", "status").
_REASON = (
    r"(?:Continue|OK|Created|Accepted|No\s+Content|Moved\s+Permanently|Found|Not\s+Modified|"
    r"Bad\s+Request|Unauthori[sz]ed|Payment\s+Required|Forbidden|Not\s+Found|Method\s+Not\s+Allowed|"
    r"Not\s+Acceptable|Request\s+Time-?out|Conflict|Gone|Length\s+Required|Precondition\s+Failed|"
    r"(?:Request\s+Entity|Payload)\s+Too\s+Large|Unsupported\s+Media\s+Type|Unprocessable\s+(?:Entity|Content)|"
    r"Locked|Failed\s+Dependency|Precondition\s+Required|Too\s+Many\s+Requests|Internal\s+Server\s+Error|"
    r"Not\s+Implemented|Bad\s+Gateway|Service\s+(?:Temporarily\s+)?Unavailable|Gateway\s+Time-?out|"
    r"Web\s+Server\s+Is\s+Down|Connection\s+Timed\s+Out|Origin\s+Is\s+Unreachable|A\s+Timeout\s+Occurred)"
)
_HTTP_CODE = r"[1-5]\d\d(?![\d.,]\d)"
# Technical words that mix letters and digits but are vocabulary, not ids.
_TECH_WORDS = (
    r"OAuth\s?[12](?:\.0)?|SHA-?(?:1|224|256|384|512)|MD5|Base64|UTF-?(?:8|16)|ISO[- ]?(?:8601|4217|3166(?:-\d)?)|"
    r"x\.?509|IPv[46]|TLSv?1(?:\.[0-3])?|SSLv[23]|HTTP/?[123](?:\.[01])?|HTTP2|S3|EC2|B2[BC]|2FA|3DS2?|P2P|"
    r"PKCS#?\d+|AES-?\d+|RSA-?\d+|Win(?:32|64)|x64|x86|ARM64|SP-API|v\d{1,2}(?:\.\d+)*"
)

# One pass over the line. Each entry: (kind, pattern, where it can start):
# "l" / "u" a word starting lower / upper case, "t" a letter-led token with
# more than letters in it (digits, "_", "@", ".", ":"), "d" a digit, "p"
# anything else (quotes, "#", "+", "$", "-"). The pass dispatches on the first
# character and, within a class, tries entries in this order (earlier = more
# specific). The kind is the placeholder, except ``keep*`` (left as is) and the
# ``*_ctx`` ones (their context words are kept, the value after them masked).
# The look-aheads opening some patterns only make a failing try fail sooner.
_MASKS = [
    ("keep_code", rf"(?=[1-5]\d\d\W)(?=\d{{3}}\]?\)?\s?[:-]?\s?[A-Z]){_HTTP_CODE}\]?\)?\s?[:-]?\s?{_REASON}\b", "d"),
    ("keep_reason", rf"(?=[ABCFGILMNOPRTUW]){_REASON}\s?(?:[\[(]|[:-]\s?[\[(]?){_HTTP_CODE}\b", "u"),
    ("keep_ctx", rf"(?=[HSsEeRrCc\"fa])(?:(?:HTTP(?:/\d(?:\.\d)?)?|[Ss]tatus(?:[ _-]?[Cc]ode)?|\"status(?:_?[Cc]ode)?\"|[Ee]rror|[Rr]esponse|[Cc]ode)"
                 rf"\s?[:=]?\s?[\[(]?{_HTTP_CODE}\b"
                 rf"|(?:responded|replied|failed|answered) with(?: an?)?(?: HTTP| status)?(?: code)? [45]\d\d\b(?![.,]\d)"
                 rf"|returned(?: an?)?(?: HTTP| status)(?: code)? [45]\d\d\b(?![.,]\d))", "lutp"),
    ("keep_word", rf"(?=[ABEHIMOPRSTUWvx23])(?:{_TECH_WORDS})(?![\w-])", "td"),
    ("url", r"(?:https?|ftp|wss?|sftp)://[^\s<>\"'`()\[\]{}]*[^\s<>\"'`()\[\]{}.,;:!?]", "t"),
    # Lenient on purpose: "invalid email" messages quote invalid addresses ("jane@example").
    ("email", r"(?<![\w.%+'-])(?=[\w.%+'-]*@)[\w.%+'-]+@+[\w-]+(?:\.[\w-]+)*", "td"),
    ("uuid", r"(?=[0-9a-fA-F]{8})[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}(?![\w-])", "td"),
    ("ip",
     r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\w|\.\d|:\d)"
     r"|(?=\[?[0-9a-fA-F]{0,4}:)\[?(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}"
     r"|(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5})?"
     r"|::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)(?:\]:\d{1,5})?\]?(?!\w|:[0-9a-fA-F]))", "tdp"),
    ("host", r"(?<![\w.@/-])(?=[\w-]*\.[A-Za-z])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
             r"(?:com|net|org|io|co|dev|app|shop|store|test|example|local|internal|info|biz|us|uk|de|fr|ca|au|eu|nl|jp|cloud|ai)"
             r"(?::\d{1,5})?(?![\w-]|\.\w)", "td"),
    ("timestamp",
     rf"(?<![\w.:/-])(?=[0-9ADFJMNOSTW])(?:\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{_TIME})?"  # 2024-05-01, 2024-05-01T10:00:00Z
     rf"|\d{{4}}/\d{{1,2}}/\d{{1,2}}(?:[T ]{_TIME})?"                       # 2024/05/01
     rf"|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}(?:,?\s{_TIME})?"                     # 05/01/2024 10:00
     rf"|\d{{1,2}}\.\d{{1,2}}\.\d{{4}}(?:,?\s{_TIME})?"                     # 01.05.2024
     rf"|(?:{_WEEKDAY})?\d{{1,2}}\s{_MONTH}\s\d{{4}}(?:,?\s{_TIME})?"       # Mon, 01 Jan 2024 10:00:00 GMT
     rf"|(?:{_WEEKDAY})?{_MONTH}\s\d{{1,2}}(?:st|nd|rd|th)?,?\s(?:\d{{4}}|{_TIME})(?:,?\s{_TIME})?(?:\s\d{{4}})?"  # Jan 2, 2024
     rf"|\d{{1,2}}:\d{{2}}:\d{{2}}(?:[.,]\d+)?(?:\s?(?:Z|UTC|GMT|[+-]\d{{2}}:?\d{{2}}))?"  # 10:00:00
     rf")(?![\w/-])", "dut"),
    # International phone numbers ("+44 20 7946 0958"): only with the "+", so that runs of numbers stay numbers.
    ("phone", r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![\w])", "p"),
    ("quoted_dq", r"\"[^\"\n]{0,300}\"", "p"),
    ("quoted", r"(?<![\w'])'[^'\n]{0,300}'(?!\w)|“[^”\n]{0,300}”|‘[^’\n]{0,300}’|«[^»\n]{0,300}»"
               r"|„[^“\n]{0,300}“|`[^`'\n]{0,300}[`']|「[^」\n]{0,300}」", "p"),
    ("amount",
     rf"(?<![\w.,])(?=[^a-z])(?:[-+−]?\s?{_CURRENCY_SIGN}\s?[-+−]?{_NUMBER}"
     rf"(?:\s?{_CODE_AHEAD}(?i:{_CURRENCY_CODES})\b)?"
     rf"|[-+−]?{_NUMBER}\s?(?:[€£¥₹₩₽₺₪$]|{_CODE_AHEAD}(?i:{_CURRENCY_CODES})\b)"
     rf"|(?=[A-Z]{{3}}\s?[-+−]?\d)(?:{_CURRENCY_CODES})\s?[-+−]?{_NUMBER})(?![\w])", "dput"),
    ("order", r"(?<![\w&])#[A-Za-z]{0,3}-?\d+(?:-\d+)?(?!\w|[.-]\w)", "p"),
    ("code_ctx", r"(?=[RrCcPpDdVvIiAaGg])(?:(?i:(?:referral|coupon|promo|discount|voucher|invite|invitation|affiliate|gift\s+card)(?:\s+code)?)"
                 r"(?:\s?[:=]\s?|\s))(?=[A-Za-z0-9_-]*[0-9]|[A-Z0-9_-]{4,}(?![\w-]))[A-Za-z0-9][A-Za-z0-9_-]{3,39}(?![\w-])", "lu"),
    ("num_unit", r"[-+−]?\d+(?:[.,]\d+)?(?=(?:ms|s|secs?|seconds?|m|mins?|h|hrs?|d|days?|kb|KB|mb|MB|gb|GB|px|x|k|K|%)(?![\w]))", "dp"),
    ("hex", r"(?=0x|[0-9a-fA-F]{8})(?:0x[0-9a-fA-F]+|(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8,}|(?=[0-9A-F]*[A-F])(?=[0-9A-F]*[0-9])[0-9A-F]{8,})(?![\w-])", "td"),
    # Stripe-style ids ("cus_", "req_"...) even when their random part has no digit.
    ("id_prefixed", r"(?=[a-z]{2,8}_)[a-z]{2,8}_(?:(?:live|test)_)?(?=[A-Za-z0-9]*[A-Z0-9])[A-Za-z0-9]{8,}(?![\w-])", "t"),
    # Magento ACL resources ("Magento_Sales::actions_view") fill "%resources" in its wording.
    ("acl", r"(?=[A-Z][A-Za-z0-9]*_[A-Z])[A-Z][A-Za-z0-9]*_[A-Z][A-Za-z0-9]*::\w+", "t"),
    # Letters and digits mixed (SKUs, order refs, API keys shown with stars): an identifier.
    ("id", r"(?<![\w.*-])(?=[\w.*-]*\d)(?=[\w.*-]*[A-Za-z])[A-Za-z0-9*](?:[\w.*-]*[A-Za-z0-9])?(?![\w*-])", "td"),
    ("num", rf"(?<![.])(?:(?<=\s)[-+−])?{_NUMBER}(?![A-Za-z0-9_])", "dp"),
    # Person names where a message names the member a referral or access was for.
    ("name_ctx", r"(?=[tfbawrn])(?:(?:(?:to|for|by|and|with|referrer|referee) |name \(|name: ))"
                 r"[A-ZÀ-Þ][a-zà-ÿ'’]+(?:[ -][A-ZÀ-Þ][a-zà-ÿ'’]+){1,2}"
                 r"(?=\s?(?:[()\[\].,;:!?]|$)| (?:were|was|is|has|had|and)\b)", "l"),
]
_PLACEHOLDER_OF = {
    "url": "<url>", "email": "<email>", "uuid": "<uuid>", "timestamp": "<timestamp>", "ip": "<ip>",
    "quoted": "<quoted>", "amount": "<amount>", "order": "<order>", "hex": "<hex>", "id_prefixed": "<id>",
    "id": "<id>", "num_unit": "<num>", "num": "<num>", "name_ctx": "<name>", "code_ctx": "<id>",
    "quoted_dq": "<quoted>", "acl": "<id>", "host": "<host>", "phone": "<phone>",
}
KINDS = (
    "url", "email", "host", "uuid", "timestamp", "ip", "phone", "quoted", "amount", "order", "hex", "id", "num", "name",
    "platform",
)


# How each start class is recognised. A letter-led token is more than a word
# when its letters are followed by anything but a space or plain punctuation,
# so "customer" and "customer," are spared the token alternatives.
_START_CLASSES = (
    ("l", r"(?=[a-z])"),
    ("u", r"(?=[A-Z])"),
    ("t", r"(?=[A-Za-z]+[^A-Za-z\s,;!?)\]}>\"])"),
    ("d", r"(?=[0-9])"),
    ("p", r"(?=[^A-Za-z0-9\s])"),
)


def _compile(skip: frozenset[str]) -> re.Pattern:
    """The masking pass: one regex, tried only where a token starts, dispatched on its first character.

    Every variable part starts a token, so positions inside a word are refused
    by one cheap look-behind; the first-character dispatch then spares a plain
    word the dozen alternatives that need digits or punctuation.
    """
    classes = []
    for start_class, guard in _START_CLASSES:
        alternatives = [
            f"(?P<{kind}__{start_class}>{pattern})"
            for kind, pattern, starts in _MASKS
            if start_class in starts and kind not in skip
        ]
        if alternatives:
            classes.append(f"{guard}(?:{'|'.join(alternatives)})")
    return re.compile(f"(?<![A-Za-z0-9_])(?:{'|'.join(classes)})")


_PROSE = _compile(frozenset())
# JSON-ish text: quotes are structure (keys, string values), not variables, so
# the strings are kept and only what is variable inside them is masked. The
# same for a Python dict's repr, whose quotes are single.
_JSONISH = _compile(frozenset({"quoted_dq"}))
_PY_REPR = _compile(frozenset({"quoted_dq", "quoted"}))
_JSON_HINT = re.compile(r"[{\[]\s*\"|\"\s*:\s*(?:[\"\[{\d-]|true\b|false\b|null\b)")
_PY_REPR_HINT = re.compile(r"[{\[]\s*'|'\s*:\s*(?:['\[{\d-]|True\b|False\b|None\b)")
_NAME = re.compile(r"(?<![A-Za-z0-9_])" + next(pattern for kind, pattern, _ in _MASKS if kind == "name_ctx"))
_CODE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*$")
_NAME_START = re.compile(r"[A-ZÀ-Þ]")
_PLACEHOLDERS = re.compile("<(" + "|".join(KINDS) + ")>")


# Group name ("amount__d") -> its placeholder; None where the match decides (keep it, keep a prefix).
_REPLACEMENT = {
    name: None if kind.startswith("keep") or kind.endswith("_ctx") else _PLACEHOLDER_OF[kind]
    for name in _PROSE.groupindex
    if "__" in name
    for kind in [name.partition("__")[0]]
}


def _replace(match: re.Match) -> str:
    name = match.lastgroup
    placeholder = _REPLACEMENT[name]
    if placeholder is not None:
        return placeholder
    text = match.group()
    if name.startswith("code_ctx"):  # "referral code: AB12CD" -> keep up to the code
        return text[: _CODE_VALUE.search(text).start()] + "<id>"
    if name.startswith("name_ctx"):  # "to Jane Doe" -> keep up to the capital
        return text[: _NAME_START.search(text).start()] + "<name>"
    return text


@lru_cache(maxsize=256)
def _platform_pattern(platform: str) -> re.Pattern | None:
    """The platform's own name as a whole word, to mask; None for names too short to be safe."""
    if len(platform) < 3:
        return None
    return re.compile(r"(?<![\w<])" + re.escape(platform) + r"(?![\w>])")


def _cap(template: str) -> str:
    if len(template) <= MAX_TEMPLATE_CHARS:
        return template
    return template[: MAX_TEMPLATE_CHARS - len(TRUNCATION_MARK)].rstrip() + TRUNCATION_MARK


def _mask(line: str, platform: str | None) -> str:
    if len(line) > _MAX_LINE_CHARS:
        cut = line.rfind(" ", 0, _MAX_LINE_CHARS)
        line = line[: cut if cut > 0 else _MAX_LINE_CHARS]
    if "'" in line and _PY_REPR_HINT.search(line):
        pattern = _PY_REPR
    elif '"' in line and _JSON_HINT.search(line):
        pattern = _JSONISH
    else:
        pattern = _PROSE
    masked = pattern.sub(_replace, line)
    if "<name>" in masked:
        # A message names the person twice ("You and Jane Doe were... Jane Doe
        # finished"), the second time without the context that gave it away.
        names = {m.group()[_NAME_START.search(m.group()).start():] for m in _NAME.finditer(line)}
        for name in sorted(names, key=lambda name: (-len(name), name)):  # a fixed order: determinism
            masked = re.sub(r"(?<!\w)" + re.escape(name) + r"(?!\w)", "<name>", masked)
    if platform and platform in masked:
        own_name = _platform_pattern(platform)
        if own_name is not None:
            masked = own_name.sub("<platform>", masked)
    return masked


def _fingerprint(template: str) -> str:
    return hashlib.blake2b(template.encode("utf-8"), digest_size=_FINGERPRINT_BYTES).hexdigest()


def _normalise(message: str, platform: str | None) -> NormalisedMessage:
    line = first_meaningful_line(message)
    if not line:
        return EMPTY
    masked = _mask(line, platform)
    template = _cap(masked)
    kinds = tuple(dict.fromkeys(_PLACEHOLDERS.findall(masked)))
    return NormalisedMessage(
        template=template,
        category=_categorise(template),
        fingerprint=_fingerprint(template),
        masked=kinds,
    )


_normalise_cached = lru_cache(maxsize=16_384)(_normalise)


def normalise_error_message(message: str | None, platform: str | None = None) -> NormalisedMessage:
    """The template, category and fingerprint of a platform's message; all blank when there is none.

    - The template is the first meaningful line (see :func:`first_meaningful_line`)
      with variable parts replaced by typed placeholders: ``<uuid> <email> <url>
      <host> <ip> <phone> <timestamp> <amount> <order> <hex> <id> <num> <quoted>
      <name> <platform>``; whitespace collapsed, case and wording kept, capped
      at ``MAX_TEMPLATE_CHARS`` (a cut template ends in ``…``). HTTP status
      codes stay where their context says they are one (``401 Unauthorized``,
      ``[429] Too Many Requests``, ``HTTP 404``, ``statusCode=401``,
      ``responded with 503``): they are meaning, not data, so "401
      Unauthorized" and "404 Not Found" never share a template. Double quotes
      in JSON-ish text are structure and are kept (what varies inside the
      strings is masked); elsewhere a quoted value is ``<quoted>``.
    - With ``platform`` given, the platform's own name in the message becomes
      ``<platform>``, so "502 Bad Gateway: Shopify returned..." and the same
      words from BigCommerce share one template. The same text with and without
      ``platform`` can therefore differ: always pass the integration's platform.
    - The fingerprint hashes the template only (blake2b, 16 hex characters),
      never the platform or the category: the same Stripe message from two
      integrations, or two platforms' identical wording, groups together.
      Group per platform at query time when wanted.
    - The category comes from the rules in ``rules/error_categories.json``,
      matched against the *template*, not the raw line: a variable value (an
      email like ``fraud.team@...``, a code like ``DUPL1CATE``) cannot sway it,
      and one fingerprint always has one category. It is computed whatever the
      event's status says; callers blank it for successes.
    - Results are cached (bounded LRU) because messages repeat a lot; messages
      over ``_MAX_CACHED_CHARS`` bypass the cache so it cannot pin huge strings.
    """
    if message is None:
        return EMPTY
    platform = platform.strip() if platform else None
    if len(message) > _MAX_CACHED_CHARS:
        return _normalise(message, platform or None)
    return _normalise_cached(message, platform or None)
