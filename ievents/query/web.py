"""The Integration Events log as web pages: integrations, the event log, event detail, error groups.

Server-rendered (Jinja2) over the same library the JSON API uses, so a page
and ``/api/v1`` always agree. A browser cannot attach a bearer header to a
link, so the key a user pastes on ``/login`` is kept in an HttpOnly,
SameSite=Strict cookie (``KEY_COOKIE``) that the pages (and the API, for the
CSV download link) accept in place of the header. An account key sees its own
account only; the operator key sees every account and picks one with a
selector. Another account's event answers 404, exactly like an unknown one.

Times are shown and typed in UTC, and say so: a log read across time zones is
only unambiguous that way. Messages are rendered exactly as the platform
reported them; Jinja2 escapes them, so a message is never markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from ievents.query.access import Caller, KeyRing
from ievents.query.events import (
    count_events,
    error_groups,
    failure_rate,
    get_event,
    integrations_summary,
    list_events,
    related_events,
)
from ievents.query.filters import EventFilter, InvalidFilter, decode_cursor

if TYPE_CHECKING:  # api.py includes this router: importing it here at run time would be circular
    from ievents.query.api import SharedClient

__all__ = ["CATEGORY_EXPLANATIONS", "KEY_COOKIE", "STATIC_DIR", "TEMPLATES_DIR", "create_web_router"]

STATIC_DIR = Path(__file__).with_name("static")
TEMPLATES_DIR = Path(__file__).with_name("templates")

# The cookie that carries the pasted key; the JSON API reads the same name, so the Download link works.
KEY_COOKIE = "ievents_key"

PAGE_SIZE = 50
ERROR_GROUPS_SHOWN = 50
RELATED_SHOWN = 10

# What each error category means for the person reading the log, and what to do about it.
CATEGORY_EXPLANATIONS: dict[str, str] = {
    "auth": (
        "The platform refused the credentials or permissions the integration used: an API key or token that is "
        "wrong, expired or revoked, a missing scope, or an account on the platform that is disabled. Reconnect the "
        "integration or renew its credentials; until then every retry fails the same way."
    ),
    "rate_limit": (
        "The platform received more calls than its limits allow and turned this one away. It usually clears on "
        "its own: the call should be retried later, more slowly."
    ),
    "validation": (
        "The platform rejected the data as sent: a field missing, malformed, out of range or not allowed (card "
        "declines land here too). Correct the record named in the message; sending the same data again will fail again."
    ),
    "not_found": (
        "The record, resource or reference the request named does not exist on the platform, or no longer does: "
        "it may have been deleted there or never synced."
    ),
    "conflict": (
        "The record exists, but its current state or version forbids this change: it was changed elsewhere in "
        "the meantime, is locked, or is already paid, fulfilled, refunded or closed."
    ),
    "timeout": (
        "The platform did not answer in time. The action may or may not have happened on its side: check there "
        "before retrying."
    ),
    "network": (
        "The request never reached the platform, or the connection broke on the way (DNS, TCP or TLS). Usually "
        "temporary; if it persists, check the platform's address and certificate."
    ),
    "upstream_error": (
        "The platform failed on its own side (a server error, maintenance, an invalid response) or a script "
        "crashed. Nothing in the request can fix it: retry later, and contact the platform if it persists."
    ),
    "fraud_rule": (
        "A fraud rule fired: the referral came from the same person, email, device or IP as the referrer, or a "
        "payment platform's risk screen blocked it. Nothing was created. When testing, use a different person "
        "and device than the referring member."
    ),
    "invalid_referral": (
        "The visit or conversion carried no usable referral: no referral code, or a code or link that is unknown, "
        "expired or not a valid member referral link. The event was captured, but no referral was created."
    ),
    "duplicate": (
        "What the request would create already exists or was already done: the same email already referred, a "
        "name or SKU already taken. Usually there is nothing to fix."
    ),
    "unknown": (
        "The message matched no known kind of error. Read it as the platform reported it above; the platform's "
        "support can say what it means."
    ),
}

CATEGORY_LABELS: dict[str, str] = {
    "auth": "Authentication",
    "rate_limit": "Rate limit",
    "validation": "Validation",
    "not_found": "Not found",
    "conflict": "Conflict",
    "timeout": "Timeout",
    "network": "Network",
    "upstream_error": "Platform error",
    "fraud_rule": "Fraud rule",
    "invalid_referral": "Invalid referral",
    "duplicate": "Duplicate",
    "unknown": "Unknown",
}

TYPE_LABELS: dict[str, str] = {
    "one_click_access": "One Click Access",
    "api_call": "API Call",
    "integration_script": "Integration Script",
    "conversion": "Conversion",
    "order": "Order",
    "customer": "Customer",
    "product": "Product",
    "other": "Other",
}

DIRECTION_LABELS: dict[str, str] = {"pull": "Pull", "push": "Push", "none": "—"}

# The status tabs of the log, as users know them: (label, status).
STATUS_TABS: tuple[tuple[str, str | None], ...] = (
    ("List All", None),
    ("Info", "info"),
    ("Success", "success"),
    ("Failure", "failure"),
)

# Filter fields a page reads from its query string; paging (limit, cursor) is handled apart.
FILTER_FIELDS: tuple[str, ...] = (
    "account_id",
    "integration_id",
    "status",
    "type",
    "direction",
    "since",
    "until",
    "search",
    "error_category",
    "fingerprint",
)
_TIME_FIELDS = ("since", "until")

# Quick ranges offered next to the time inputs: (label, seconds back from now).
QUICK_RANGES: tuple[tuple[str, int], ...] = (("24 h", 86_400), ("7 days", 7 * 86_400), ("30 days", 30 * 86_400))

SECURITY_HEADERS = {
    # Only this app's own files; inline SVG is markup, not a resource, so the chart needs no exception.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class BadFilter(ValueError):
    """A query-string value a page cannot use; the message is shown above the form."""


# ---------------------------------------------------------------- pure helpers (tested directly)


def parse_moment(text: str, field: str) -> datetime:
    """A time typed in a form or carried in a link: ISO 8601, read as UTC when it names no offset.

    ``<input type="datetime-local">`` sends ``2024-05-01T12:00`` (no zone); links this module makes
    carry ``...Z``. Both are accepted; anything else raises ``BadFilter``.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadFilter(f"{field}: {text!r} is not a date and time (use YYYY-MM-DD HH:MM, UTC)") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def iso_z(moment: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with ``Z``, as the API and the events use."""
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return text.replace(".000Z", "Z")


def filter_from_params(params: Mapping[str, str], caller: Caller, *, paged: bool = True) -> EventFilter:
    """The ``EventFilter`` a page's query string asks for, limited to what ``caller`` may see.

    Blank values mean "any". A value the filter refuses raises ``BadFilter`` with a readable reason;
    another account asked for by an account key raises the 404 ``HTTPException`` of ``account_scope``.
    """
    values: dict[str, Any] = {}
    for field in FILTER_FIELDS:
        value = (params.get(field) or "").strip()
        if not value or (field == "status" and value == "all"):
            continue
        values[field] = parse_moment(value, field) if field in _TIME_FIELDS else value
    values["account_id"] = caller.account_scope(values.get("account_id"))
    if paged:
        values["limit"] = params.get("limit") or PAGE_SIZE
        if params.get("cursor"):
            values["cursor"] = params["cursor"]
    try:
        flt = EventFilter.model_validate(values)
        if flt.cursor is not None:
            decode_cursor(flt.cursor)  # a mangled link is shown as the form's error, not as the JSON API's 422
        return flt
    except ValidationError as exc:
        raise BadFilter("; ".join(_readable(error) for error in exc.errors())) from None
    except InvalidFilter as exc:
        raise BadFilter(f"{exc.field}: {exc}") from None


def filter_params(flt: EventFilter, caller: Caller, **changes: str | None) -> dict[str, str]:
    """The query string that selects ``flt`` again (no paging), with ``changes`` applied (``None`` drops a key).

    An account caller's own account is left out: it is implied by the key, and keeps links short.
    """
    params: dict[str, str] = {}
    for field in FILTER_FIELDS:
        value = getattr(flt, field, None)
        if value is None or (field == "account_id" and not caller.is_operator):
            continue
        params[field] = iso_z(value) if isinstance(value, datetime) else str(value)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def url(path: str, params: Mapping[str, str] | None = None) -> str:
    query = urlencode({key: value for key, value in (params or {}).items() if value not in (None, "")})
    return f"{path}?{query}" if query else path


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never ``//host`` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def failure_chart(series: Mapping[str, Any], width: int = 1200, height: int = 230) -> dict[str, Any]:
    """The geometry of the failure-rate chart, as SVG coordinates the template draws.

    One red bar per bucket, as tall as its failure rate (0 to 100 %; none for a bucket without
    events, whose rate is ``None``); under the axis a grey strip of the same buckets' volume,
    relative to the busiest one, so that 100 % of two events does not read like an outage. Every
    bucket carries a tooltip with the exact numbers.
    """
    points = list(series.get("points") or [])
    left, right, top = 48, 8, 10
    plot_w, plot_h = width - left - right, height - top - 80
    baseline = top + plot_h
    strip_top, strip_h = baseline + 12, 36
    busiest = max((point["total"] for point in points), default=0) or 1
    slot = plot_w / len(points) if points else plot_w
    gap = min(3.0, slot * 0.2)
    bars = []
    for index, point in enumerate(points):
        rate = point.get("rate")
        rate_h = plot_h * float(rate or 0.0)
        volume_h = max(1.0, strip_h * point["total"] / busiest) if point["total"] else 0.0
        bars.append(
            {
                "x": round(left + index * slot + gap / 2, 2),
                "w": round(max(slot - gap, 0.5), 2),
                "y": round(baseline - rate_h, 2),
                "h": round(rate_h, 2),
                "volume_y": round(strip_top + strip_h - volume_h, 2),
                "volume_h": round(volume_h, 2),
                "title": (
                    f"{when(point['start'])} UTC: {point['failures']} of {point['total']} failed ({percent(rate)})"
                    if point["total"] else f"{when(point['start'])} UTC: no events"
                ),
            }
        )
    grid = [{"y": round(top + plot_h * (1 - s), 2), "label": f"{int(s * 100)} %"} for s in (0.0, 0.5, 1.0)]
    labels = []
    if points:
        labels.append({"x": left, "anchor": "start", "text": when(points[0]["start"])})
        if len(points) > 1:
            labels.append({"x": width - right, "anchor": "end", "text": when(points[-1]["start"])})
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "baseline": baseline,
        "strip_y": strip_top + strip_h / 2 + 4,
        "label_y": height - 8,
        "bars": bars,
        "grid": grid,
        "labels": labels,
        "bucket": _duration(int(series.get("bucket_seconds") or 0)),
        "since": when(series.get("since") or (points[0]["start"] if points else None)),
        "until": when(series.get("until")),
        "total": sum(point["total"] for point in points),
        "failures": sum(point["failures"] for point in points),
    }


def pretty_details(details: str | None) -> str:
    """The raw details JSON, indented; text that is not JSON is shown as it came."""
    if not details:
        return ""
    try:
        return json.dumps(json.loads(details), indent=2, ensure_ascii=False)
    except ValueError:
        return details


def when(value: str | datetime | None) -> str:
    """``2024-05-01 12:03:07`` (UTC) from an ISO string or an aware datetime; '' for nothing."""
    if not value:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def ago(value: str | datetime | None, now: datetime | None = None) -> str:
    """How long before ``now``, roughly: ``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if not value:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return "just now"


def percent(rate: float | None) -> str:
    if rate is None:
        return "—"
    value = rate * 100
    return f"{value:.0f} %" if value in (0, 100) or value >= 10 else f"{value:.1f} %"


def type_label(canonical: str | None) -> str:
    return TYPE_LABELS.get(canonical or "", (canonical or "").replace("_", " ").capitalize())


def input_moment(moment: datetime | None) -> str:
    """A filter time as ``<input type="datetime-local">`` wants it (UTC, seconds only when set)."""
    if moment is None:
        return ""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S" if moment.second or moment.microsecond else "%Y-%m-%dT%H:%M")


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds} s"


def _readable(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# ---------------------------------------------------------------- the router


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, ago=ago, percent=percent, type_label=type_label, pretty_details=pretty_details,
        category_label=lambda category: CATEGORY_LABELS.get(category or "", category or ""),
        direction_label=lambda direction: DIRECTION_LABELS.get(direction or "", direction or ""),
    )
    env.globals.update(url=url, CATEGORY_EXPLANATIONS=CATEGORY_EXPLANATIONS)
    return Jinja2Templates(env=env)


def create_web_router(shared: SharedClient, keys: KeyRing) -> APIRouter:
    """The web pages, on the API's shared ClickHouse client and key ring (mount ``STATIC_DIR`` at ``/static``)."""
    router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
    templates = _templates()

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        response = templates.TemplateResponse(request, name, context, status_code=status_code)
        response.headers.update(SECURITY_HEADERS)
        # Pages show one account's data: never cache them where another user of the browser could see them.
        response.headers["Cache-Control"] = "no-store"
        return response

    def signed_in(request: Request) -> Caller:
        """The caller the login cookie stands for; without a valid one, a redirect to ``/login`` (303)."""
        presented = request.cookies.get(KEY_COOKIE)
        try:
            return keys.identify(presented)
        except HTTPException:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            headers = {"Location": url("/login", {"next": target} if target != "/" else None)}
            if presented:  # a key that stopped working (rotated, removed): forget it
                headers["Set-Cookie"] = f"{KEY_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
            raise HTTPException(303, "Sign in first.", headers=headers) from None

    def chrome(request: Request, who: Caller, section: str, account: str | None) -> dict[str, Any]:
        """What every signed-in page's frame needs: who is signed in, the account selector, the nav links."""
        accounts: list[str] = []
        if who.is_operator:
            with shared.borrow() as client:
                accounts = known_accounts(client)
        keep = {"account_id": account} if who.is_operator and account else {}
        return {
            "who": who,
            "section": section,
            "account": account,
            "accounts": accounts,
            "nav": {
                "integrations": url("/", keep),
                "log": url("/log", keep),
                "errors": url("/errors", keep),
            },
            "path": request.url.path,
        }

    def not_found(request: Request, who: Caller, message: str) -> Response:
        context = chrome(request, who, "", None) | {"message": message}
        return page(request, "not_found.html", context, status_code=404)

    # ------------------------------------------------------------ sign in / out

    @router.get("/login")
    def login_form(request: Request, target: str = Query("/", alias="next")) -> Response:
        return page(request, "login.html", {"error": None, "next": safe_next(target)})

    @router.post("/login")
    async def login(request: Request) -> Response:
        """Check the pasted key, keep it in the HttpOnly cookie, go where the user was headed."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        target = safe_next((form.get("next") or ["/"])[0])
        try:
            keys.identify(key)
        except HTTPException:
            error = "That key was not accepted. Paste an API key of your account, or the operator key."
            return page(request, "login.html", {"error": error, "next": target}, status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            KEY_COOKIE, key, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https",
        )
        return response

    @router.api_route("/logout", methods=["GET", "POST"])
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------ pages

    @router.get("/")
    def integrations(request: Request, who: Caller = Depends(signed_in)) -> Response:
        """Every connected integration: last status, last event, 24 h failure rate, and a Manage link."""
        try:
            account = who.account_scope(request.query_params.get("account_id") or None)
        except HTTPException:
            return not_found(request, who, "There is no such account.")
        with shared.borrow() as client:
            rows = integrations_summary(client, account)
        for row in rows:
            # The operator's links name the row's account: with every account shown, an integration id
            # alone would mix the accounts that connected it.
            keep = {"account_id": row["account_id"]} if who.is_operator else {}
            row["manage_url"] = url("/log", keep | {"integration_id": row["integration_id"]})
            row["errors_url"] = url("/errors", keep | {"integration_id": row["integration_id"]})
        context = chrome(request, who, "integrations", account) | {
            "integrations": rows,
            "show_account": who.is_operator and account is None,
        }
        return page(request, "integrations.html", context)

    @router.get("/log")
    def event_log(request: Request, who: Caller = Depends(signed_in)) -> Response:
        """The Integration Events log: status tabs, counter + Download, filters, newest first, keyset paging."""
        params = request.query_params
        try:
            flt = filter_from_params(params, who)
        except HTTPException:
            return not_found(request, who, "There is no such account.")
        except BadFilter as exc:
            return _log_page(request, who, None, str(exc), params)
        return _log_page(request, who, flt, None, params)

    def _log_page(
        request: Request, who: Caller, flt: EventFilter | None, error: str | None, raw: Mapping[str, str]
    ) -> Response:
        account = flt.account_id if flt is not None else (raw.get("account_id") if who.is_operator else None)
        context = chrome(request, who, "log", account)
        if flt is None:  # the filter could not be read: show the form as typed, with the reason
            context |= {
                "error": error, "flt": None, "form": {field: raw.get(field, "") for field in FILTER_FIELDS},
                "events": [], "tabs": [], "counter": None, "download_url": None, "older_url": None,
                "newest_url": None, "integrations": [], "types": list(TYPE_LABELS), "chips": [],
                "quick_ranges": [],
            }
            return page(request, "log.html", context, status_code=400)
        unpaged = flt.model_copy(update={"status": None, "cursor": None})
        with shared.borrow() as client:
            events = list_events(client, flt)
            counts = count_events(client, unpaged)
            integration_rows = integrations_summary(client, flt.account_id)
        counter = counts.by_status.get(flt.status, 0) if flt.status else counts.total
        base = filter_params(flt, who)
        paging = {"limit": str(flt.limit)} if flt.limit != PAGE_SIZE else {}
        tabs = [
            {
                "label": label,
                "status": status or "all",
                "active": flt.status == status,
                "count": counts.by_status.get(status, 0) if status else counts.total,
                "url": url("/log", base | {"status": status}),
            }
            for label, status in STATUS_TABS
        ]
        types = list(TYPE_LABELS) + sorted(set(counts.by_type) - set(TYPE_LABELS))
        if flt.type and flt.type not in types:
            types.append(flt.type)
        context |= {
            "error": None,
            "flt": flt,
            "form": _form(flt, base),
            "events": events.events,
            "tabs": tabs,
            "counter": counter,
            "download_url": url("/api/v1/events.csv", base),
            "older_url": url("/log", base | paging | {"cursor": events.next_cursor}) if events.next_cursor else None,
            "newest_url": url("/log", base | paging) if flt.cursor else None,
            "integrations": _integration_options(integration_rows, flt.integration_id),
            "types": types,
            "chips": _chips(flt, base, events.events),
            "quick_ranges": _quick_ranges(base, "/log"),
        }
        return page(request, "log.html", context)

    @router.get("/events/{event_id}")
    def event_detail(event_id: str, request: Request, who: Caller = Depends(signed_in)) -> Response:
        """One event: result, status, message and its meaning, every parameter, raw details, related events."""
        try:
            with shared.borrow() as client:
                event = get_event(client, event_id, who.account_scope(None))
                related = related_events(client, event, limit=RELATED_SHOWN) if event else []
        except InvalidFilter:
            event = None
        if event is None:
            return not_found(request, who, "There is no such event in your log.")
        account = event["account_id"] if who.is_operator else None
        keep = {"account_id": account} if account else {}
        redacted = set(event.get("redacted_parameters") or [])
        fingerprint = event.get("error_fingerprint")
        parameters = [
            {"name": name, "value": value, "redacted": name in redacted}
            for name, value in sorted((event.get("parameters") or {}).items())
        ]
        context = chrome(request, who, "log", account) | {
            "event": event,
            "parameters": parameters,
            "details": pretty_details(event.get("details")),
            "explanation": CATEGORY_EXPLANATIONS.get(event.get("error_category") or ""),
            "related": related,
            "integration_log_url": url("/log", keep | {"integration_id": event["integration_id"]}),
            "group_url": url("/log", keep | {"fingerprint": fingerprint}) if fingerprint else None,
            "log_url": url("/log", keep),
        }
        return page(request, "event.html", context)

    @router.get("/errors")
    def errors(request: Request, who: Caller = Depends(signed_in)) -> Response:
        """Error groups (same template, same fingerprint) with counts, and the failure rate over time."""
        params = request.query_params
        try:
            flt = filter_from_params(params, who, paged=False)
        except HTTPException:
            return not_found(request, who, "There is no such account.")
        except BadFilter as exc:
            context = chrome(request, who, "errors", None) | {
                "error": str(exc), "groups": [], "chart": None,
                "form": {field: params.get(field, "") for field in FILTER_FIELDS}, "integrations": [],
                "quick_ranges": [], "chips": [],
            }
            return page(request, "errors.html", context, status_code=400)
        with shared.borrow() as client:
            groups = error_groups(client, flt, limit=ERROR_GROUPS_SHOWN)
            series = failure_rate(client, flt)
            integration_rows = integrations_summary(client, flt.account_id)
        base = filter_params(flt, who)
        keep = {"account_id": flt.account_id} if who.is_operator and flt.account_id else {}
        for group in groups:
            group["log_url"] = url("/log", keep | {"fingerprint": group["fingerprint"]})
            group["sample_url"] = f"/events/{group['sample_event_id']}" if group.get("sample_event_id") else None
        context = chrome(request, who, "errors", flt.account_id) | {
            "error": None,
            "groups": groups,
            "chart": failure_chart(series),
            "form": _form(flt, base),
            "integrations": _integration_options(integration_rows, flt.integration_id),
            "quick_ranges": _quick_ranges(base, "/errors"),
            "chips": [],
        }
        return page(request, "errors.html", context)

    return router


def known_accounts(client: Any, limit: int = 1000) -> list[str]:
    """Account ids with any event, for the operator's account selector (read from the small hourly rollup)."""
    result = client.query(
        "SELECT DISTINCT account_id FROM integration_events_per_hour ORDER BY account_id LIMIT {limit:UInt32}",
        parameters={"limit": limit},
    )
    return [row[0] for row in result.result_rows]


def _form(flt: EventFilter, base: Mapping[str, str]) -> dict[str, str]:
    """The filter form's values: what the links carry, times as the datetime inputs show them."""
    return {field: base.get(field, "") for field in FILTER_FIELDS} | {
        "since": input_moment(flt.since),
        "until": input_moment(flt.until),
    }


def _integration_options(rows: list[dict[str, Any]], selected: str | None) -> list[tuple[str, str]]:
    """(id, name) for the integration selector, by name; the selected one kept even if it is quiet now."""
    names = {row["integration_id"]: row["integration_name"] or row["integration_id"] for row in rows}
    if selected and selected not in names:
        names[selected] = selected
    return sorted(names.items(), key=lambda item: item[1].lower())


def _chips(flt: EventFilter, base: Mapping[str, str], events: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Filters set by a link rather than the form (error group, category), each with a link that clears it.

    An error group is named by its template (read off the listed events) rather than its fingerprint.
    """
    chips = []
    for field, label in (("fingerprint", "Error group"), ("error_category", "Category")):
        value = getattr(flt, field, None)
        if not value:
            continue
        if field == "fingerprint":
            shown = next((e["message_template"] for e in events if e.get("message_template")), value)
        else:
            shown = CATEGORY_LABELS.get(value, value)
        clear = url("/log", {key: kept for key, kept in base.items() if key != field})
        chips.append({"label": label, "value": shown, "clear_url": clear})
    return chips


def _quick_ranges(base: Mapping[str, str], path: str, now: datetime | None = None) -> list[dict[str, str]]:
    """Links for the last 24 h / 7 days / 30 days and for all time, keeping every other filter."""
    now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    others = {key: value for key, value in base.items() if key not in _TIME_FIELDS}
    ranges = [
        {"label": label, "url": url(path, others | {"since": iso_z(now - timedelta(seconds=seconds))})}
        for label, seconds in QUICK_RANGES
    ]
    ranges.append({"label": "All time", "url": url(path, others)})
    return ranges


