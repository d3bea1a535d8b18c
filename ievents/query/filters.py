"""What the Integration Events log asks of ClickHouse, as parameterised SQL.

Pure: nothing here talks to ClickHouse. Every value a user typed travels as a
server-side parameter (``{name:Type}``, bound by clickhouse-connect's
``parameters=``), never inside the SQL text, so a filter value cannot change
what a query does. The only identifiers spliced into SQL come from constants
in this module.

Every query of events reads ``integration_events FINAL``: the table is a
ReplacingMergeTree, and until a background merge runs it can hold several
copies of a re-delivered event. ``FINAL`` collapses them at read time, which
is what keeps duplicates invisible to users.

Counters read the per-hour or per-minute rollups (SummingMergeTree tables kept
by materialized views, see ``sink/migrations/0006_rollups.sql``) whenever that
gives the same answer: the filter uses only dimensions the rollups keep and its
time bounds fall on bucket boundaries. Anything else counts the raw table.

Free-text search (``search``) matches a substring of the message or of any
parameter value, ignoring case, with ``positionCaseInsensitiveUTF8``: the text
is compared literally, so ``%``, ``_``, quotes and backslashes mean themselves
(there is no pattern language to escape).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Status = Literal["info", "success", "failure"]
Direction = Literal["none", "pull", "push"]
CountDimension = Literal["status", "type", "integration_id"]
CountSource = Literal["hour", "minute", "raw"]

STATUSES: tuple[Status, ...] = ("info", "success", "failure")
COUNT_DIMENSIONS: tuple[CountDimension, ...] = ("status", "type", "integration_id")
MAX_LIMIT = 1000
MAX_SEARCH_LENGTH = 500
TABLE = "integration_events FINAL"

# Where counts can come from, coarsest first: (source, table, bucket width in seconds).
ROLLUPS: tuple[tuple[CountSource, str, int], ...] = (
    ("hour", "integration_events_per_hour", 3600),
    ("minute", "integration_events_per_minute", 60),
)
COUNT_SOURCES: tuple[CountSource, ...] = ("hour", "minute", "raw")
# Filter fields the rollups can answer (they keep these dimensions; since/until when bucket-aligned).
# A filter field added later is not here, so filters using it count the raw table until a rollup keeps it.
ROLLUP_FIELDS = frozenset({"account_id", "integration_id", "status", "type", "direction", "since", "until"})
_PAGING_FIELDS = frozenset({"limit", "cursor"})

# Columns an event is served with, in table order. Listed rather than `*` so a
# migration that adds a column does not silently change what the API returns.
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "account_id",
    "integration_id",
    "integration_name",
    "integration_platform",
    "product_family",
    "occurred_at",
    "type",
    "type_raw",
    "direction",
    "status",
    "status_raw",
    "message",
    "result",
    "parameters",
    "details",
    "message_template",
    "error_category",
    "error_fingerprint",
    "redacted_parameters",
    "processed_at",
    "source_partition",
    "source_offset",
    "stored_at",
)

_COLUMNS = ", ".join(EVENT_COLUMNS)
_TIMESTAMP = "DateTime64(3, 'UTC')"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# What a DateTime64 column holds: a time outside it cannot be bound as a parameter (year 1 is sent as "1-01-01"
# and refused), and bucket arithmetic near the ends of datetime's range overflows.
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)


def _in_storable_range(moment: datetime) -> datetime:
    """``moment`` in UTC, or a ``ValueError`` (a 422 with this message) when no event can be that early or late."""
    try:
        utc = moment.astimezone(timezone.utc)
    except OverflowError:  # an offset that pushes year 1 or 9999 out of range
        utc = None
    if utc is None or not EARLIEST_TIME <= utc <= LATEST_TIME:
        raise ValueError(f"must be between {EARLIEST_TIME:%Y-%m-%d} and {LATEST_TIME:%Y-%m-%d} (UTC)")
    return moment


StorableTime = Annotated[AwareDatetime, AfterValidator(_in_storable_range)]

# One row per filter field: the condition it adds when set. The parameter is
# named after the field, so the field's value is bound as-is.
_CONDITIONS: tuple[tuple[str, str], ...] = (
    ("account_id", "account_id = {account_id:String}"),
    ("integration_id", "integration_id = {integration_id:String}"),
    ("status", "status = {status:String}"),
    ("type", "type = {type:String}"),
    ("direction", "direction = {direction:String}"),
    ("since", f"occurred_at >= {{since:{_TIMESTAMP}}}"),
    ("until", f"occurred_at < {{until:{_TIMESTAMP}}}"),
    (
        "search",
        "(positionCaseInsensitiveUTF8(message, {search:String}) > 0"
        " OR arrayExists(value -> positionCaseInsensitiveUTF8(value, {search:String}) > 0, mapValues(parameters)))",
    ),
    ("error_category", "error_category = {error_category:String}"),
    ("fingerprint", "error_fingerprint = {fingerprint:String}"),
)

# The same conditions on a rollup, for the fields it keeps: events are counted in the bucket they fall in,
# so on bucket boundaries `bucket >= since` and `bucket < until` select exactly the events the raw conditions do.
_ROLLUP_CONDITIONS: tuple[tuple[str, str], ...] = tuple(
    (field, condition.replace("occurred_at", "bucket")) for field, condition in _CONDITIONS if field in ROLLUP_FIELDS
)

_AFTER_CURSOR = f"(occurred_at, event_id) < ({{cursor_occurred_at:{_TIMESTAMP}}}, {{cursor_event_id:UUID}})"
_NEWEST_FIRST = "occurred_at DESC, event_id DESC"


class InvalidFilter(ValueError):
    """A filter value the log cannot use; ``field`` names it, the message says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class EventFilter(BaseModel):
    """Which events to show: every field left unset (``None``) matches everything.

    ``since`` is inclusive and ``until`` exclusive, so consecutive windows never
    overlap. ``search`` is a case-insensitive substring of the message or of a
    parameter value, taken literally. ``error_category`` and ``fingerprint``
    select an error category and an error group (``error_fingerprint``).
    ``cursor`` is the opaque ``next_cursor`` of the previous page.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str | None = None
    integration_id: str | None = None
    status: Status | None = None
    type: str | None = None
    direction: Direction | None = None
    since: StorableTime | None = None
    until: StorableTime | None = None
    search: Annotated[str, Field(max_length=MAX_SEARCH_LENGTH)] | None = None
    error_category: str | None = None
    fingerprint: str | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 50
    cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: Any) -> Any:
        """An HTML form sends an untouched field as ``""``; that means "any", not "equal to empty"."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value != ""}
        return data

    @model_validator(mode="after")
    def _window_is_ordered(self) -> EventFilter:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self


@dataclass(frozen=True)
class Query:
    """SQL text plus the server-side parameters it binds."""

    sql: str
    parameters: dict[str, Any]


class Cursor(BaseModel):
    """The position after the last row of a page: rows strictly older come next."""

    model_config = ConfigDict(frozen=True)

    occurred_at: StorableTime
    event_id: UUID


def encode_cursor(cursor: Cursor) -> str:
    """URL-safe base64 of the cursor's JSON, without ``=`` padding so it needs no escaping in a URL."""
    return base64.urlsafe_b64encode(cursor.model_dump_json().encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The cursor ``encode_cursor`` made; anything else raises ``InvalidFilter``."""
    try:
        payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return Cursor.model_validate_json(payload)
    except ValueError as exc:  # bad base64, bad JSON and bad fields all derive from ValueError
        raise InvalidFilter("cursor", "malformed cursor: pass the next_cursor of a previous page unchanged") from exc


def list_query(flt: EventFilter) -> Query:
    """Newest events first, one row more than ``limit`` so the caller can tell whether a next page exists.

    Keyset pagination (``(occurred_at, event_id) < cursor``) rather than
    ``OFFSET``: pages stay stable while new events arrive, and a deep page
    costs no more than the first. A malformed cursor raises ``InvalidFilter``.
    """
    conditions, parameters = _filter_conditions(flt)
    if flt.cursor is not None:
        cursor = decode_cursor(flt.cursor)
        conditions.append(_AFTER_CURSOR)
        parameters |= {"cursor_occurred_at": cursor.occurred_at, "cursor_event_id": cursor.event_id}
    parameters["limit"] = flt.limit + 1
    sql = f"SELECT {_COLUMNS} FROM {TABLE}{_where(conditions)} ORDER BY {_NEWEST_FIRST} LIMIT {{limit:UInt32}}"
    return Query(sql, parameters)


def count_source(flt: EventFilter) -> CountSource:
    """Where ``flt``'s counts can come from: the hourly rollup when every set time bound is a whole UTC
    hour, else the minutely one when they are whole minutes, else the raw table.

    Only when every filter field set is one the rollups keep (``ROLLUP_FIELDS``);
    no time bound at all is aligned to every bucket.
    """
    used = {field for field in type(flt).model_fields if getattr(flt, field) is not None} - _PAGING_FIELDS
    if not used <= ROLLUP_FIELDS:
        return "raw"
    bounds = [bound for bound in (flt.since, flt.until) if bound is not None]
    for source, _, seconds in ROLLUPS:
        if all(on_boundary(bound, seconds) for bound in bounds):
            return source
    return "raw"


def on_boundary(instant: datetime, seconds: int) -> bool:
    """Whether an aware datetime is a whole multiple of ``seconds`` since the epoch (buckets are UTC)."""
    offset = instant - _EPOCH
    return offset.microseconds == 0 and (offset.days * 86_400 + offset.seconds) % seconds == 0


def count_query(flt: EventFilter, by: CountDimension | None = None, source: CountSource | None = None) -> Query:
    """Events matching the filter: one row ``n`` in total, or rows ``key, n`` per ``status`` / ``type``, largest first.

    ``source`` defaults to ``count_source(flt)``; asking for a rollup the filter
    cannot use raises ``ValueError`` rather than answer wrongly. The cursor and
    limit are ignored: counts describe the whole filtered log, not the page
    being shown. ``by`` becomes an identifier in the SQL, so it is checked
    against the known dimensions rather than trusted to its type hint.
    """
    if by is not None and by not in COUNT_DIMENSIONS:
        raise ValueError(f"cannot count by {by!r}; choose one of {COUNT_DIMENSIONS}")
    usable = count_source(flt)
    if source is None:
        source = usable
    elif source not in COUNT_SOURCES:
        raise ValueError(f"cannot count from {source!r}; choose one of {COUNT_SOURCES}")
    elif COUNT_SOURCES.index(source) < COUNT_SOURCES.index(usable):
        raise ValueError(f"this filter cannot be counted from the {source} rollup; the coarsest it allows is {usable!r}")
    if source == "raw":
        table, n = TABLE, "count()"
        conditions, parameters = _filter_conditions(flt)
    else:
        table, n = next(name for rollup, name, _ in ROLLUPS if rollup == source), "sum(events)"
        conditions, parameters = _filter_conditions(flt, _ROLLUP_CONDITIONS)
    if by is None:
        return Query(f"SELECT {n} AS n FROM {table}{_where(conditions)}", parameters)
    sql = f"SELECT {by} AS key, {n} AS n FROM {table}{_where(conditions)} GROUP BY {by} ORDER BY n DESC, key"
    return Query(sql, parameters)


def get_query(event_id: UUID | str, account_id: str | None = None) -> Query:
    """One event by id; with ``account_id``, only if it belongs to that account.

    ``FINAL`` collapses copies that share the table's sorting key; ordering by
    ``processed_at`` makes the answer the latest copy even if a re-delivery
    ever carried a different ``occurred_at``.
    """
    try:
        parameters: dict[str, Any] = {"event_id": UUID(str(event_id))}
    except ValueError as exc:
        raise InvalidFilter("event_id", f"event_id {event_id!r} is not a UUID") from exc
    conditions = ["event_id = {event_id:UUID}"]
    if account_id is not None:
        conditions.append("account_id = {account_id:String}")
        parameters["account_id"] = account_id
    sql = f"SELECT {_COLUMNS} FROM {TABLE}{_where(conditions)} ORDER BY processed_at DESC LIMIT 1"
    return Query(sql, parameters)


def related_query(account_id: str, fingerprint: str, event_id: UUID | str, limit: int = 10) -> Query:
    """The newest events of an account with this error fingerprint, the event ``event_id`` left out."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilter("limit", f"limit must be between 1 and {MAX_LIMIT}")
    conditions = [
        "account_id = {account_id:String}", "error_fingerprint = {fingerprint:String}", "event_id != {event_id:UUID}",
    ]
    parameters = {"account_id": account_id, "fingerprint": fingerprint, "event_id": UUID(str(event_id)),
                  "limit": limit}
    sql = f"SELECT {_COLUMNS} FROM {TABLE}{_where(conditions)} ORDER BY {_NEWEST_FIRST} LIMIT {{limit:UInt32}}"
    return Query(sql, parameters)


def _filter_conditions(
    flt: EventFilter, conditions: tuple[tuple[str, str], ...] = _CONDITIONS
) -> tuple[list[str], dict[str, Any]]:
    """The conditions and parameters of the filter's set fields (paging excluded)."""
    used = [(field, condition) for field, condition in conditions if getattr(flt, field) is not None]
    return [condition for _, condition in used], {field: getattr(flt, field) for field, _ in used}


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


# ---------------------------------------------------------------- error groups


def error_groups_query(flt: EventFilter, limit: int = 50) -> Query:
    """Error groups of the filtered log, biggest first: one row per ``error_fingerprint``.

    Only events that have a fingerprint and did not succeed (failures, and infos such as a fraud rule
    firing) form groups. The sample is the group's newest event; a fingerprint always has one template
    and one category, and the newest event's are shown. Paging fields are ignored.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilter("limit", f"limit must be between 1 and {MAX_LIMIT}")
    conditions, parameters = _filter_conditions(flt)
    conditions += ["error_fingerprint != ''", "status != 'success'"]
    newest = "(occurred_at, event_id)"
    sql = (
        "SELECT error_fingerprint AS fingerprint,"
        f" argMax(message_template, {newest}) AS template,"
        f" argMax(error_category, {newest}) AS category,"
        " count() AS count,"
        " min(occurred_at) AS first_seen,"
        " max(occurred_at) AS last_seen,"
        f" argMax(message, {newest}) AS sample_message,"
        f" argMax(event_id, {newest}) AS sample_event_id"
        f" FROM {TABLE}{_where(conditions)}"
        " GROUP BY error_fingerprint"
        " ORDER BY count DESC, last_seen DESC, fingerprint"
        " LIMIT {group_limit:UInt32}"
    )
    return Query(sql, parameters | {"group_limit": limit})


# ---------------------------------------------------------------- failure rate over time

DEFAULT_RATE_RANGE = timedelta(hours=24)
# The bucket of a failure-rate series, by the length of its range: the first whose range is long enough.
RATE_BUCKETS: tuple[tuple[timedelta, int], ...] = (
    (timedelta(hours=2), 60),
    (timedelta(hours=12), 300),
    (timedelta(days=7), 3600),
)
DAY_SECONDS = 86_400
# Beyond a week buckets are days; a range of more than this many days gets buckets of several days.
MAX_RATE_POINTS = 1000


@dataclass(frozen=True)
class RateWindow:
    """The range a failure-rate series covers (``since`` inclusive, ``until`` exclusive), its bucket width in
    seconds (buckets start at whole multiples of it since the epoch, in UTC) and where it is counted from."""

    since: datetime
    until: datetime
    bucket_seconds: int
    source: CountSource

    def starts(self) -> list[datetime]:
        """The start of every bucket the range touches, oldest first."""
        first = _floor(self.since, self.bucket_seconds)
        step = timedelta(seconds=self.bucket_seconds)
        count = max(0, -(-(self.until - first) // step))
        return [first + n * step for n in range(count)]


def rate_bucket_seconds(span: timedelta) -> int:
    """Minute for up to 2 h, 5 minutes up to 12 h, hour up to 7 days, else days (several when it is very long)."""
    for longest, seconds in RATE_BUCKETS:
        if span <= longest:
            return seconds
    days = -(-span // timedelta(days=1))
    return DAY_SECONDS * max(1, -(-days // MAX_RATE_POINTS))


def rate_window(flt: EventFilter, now: datetime) -> RateWindow:
    """The range, bucket and source of ``flt``'s failure-rate series.

    The filter's ``since`` / ``until`` when set. Without ``until`` the range ends with the bucket that holds
    ``now``; without ``since`` it starts 24 hours before its end. A range the user did not bound is aligned
    to its buckets, so every bucket is whole and the rollups can answer it.
    """
    if flt.since is not None and flt.until is not None:
        since, until = flt.since, flt.until
        bucket = rate_bucket_seconds(until - since)
    elif flt.since is not None:
        since = flt.since
        bucket = rate_bucket_seconds(now - since)
        until = max(_ceil(now, bucket), _floor(since, bucket) + timedelta(seconds=bucket))
    else:
        span = DEFAULT_RATE_RANGE
        bucket = rate_bucket_seconds(span)
        until = flt.until if flt.until is not None else _ceil(now, bucket)
        since = until - span
    since, until = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    source = count_source(flt.model_copy(update={"since": since, "until": until}))
    if source == "hour" and bucket % 3600:
        source = "minute"  # hour-aligned bounds are minute-aligned too
    return RateWindow(since, until, bucket, source)


def failure_rate_query(flt: EventFilter, window: RateWindow) -> Query:
    """Events and failures per bucket of ``window`` (buckets without events are absent), oldest first."""
    bounded = flt.model_copy(update={"since": window.since, "until": window.until})
    if window.source == "raw":
        table, time_column, total, failures = TABLE, "occurred_at", "count()", "countIf(status = 'failure')"
        conditions, parameters = _filter_conditions(bounded)
    else:
        table = next(name for rollup, name, _ in ROLLUPS if rollup == window.source)
        time_column, total, failures = "bucket", "sum(events)", "sumIf(events, status = 'failure')"
        conditions, parameters = _filter_conditions(bounded, _ROLLUP_CONDITIONS)
    start = f"intDiv(toUnixTimestamp({time_column}), {{bucket_seconds:UInt32}}) * {{bucket_seconds:UInt32}}"
    sql = (
        f"SELECT {start} AS start, {total} AS total, {failures} AS failures"
        f" FROM {table}{_where(conditions)} GROUP BY start ORDER BY start"
    )
    return Query(sql, parameters | {"bucket_seconds": window.bucket_seconds})


def _floor(instant: datetime, seconds: int) -> datetime:
    offset = instant - _EPOCH
    return _EPOCH + timedelta(seconds=(offset // timedelta(seconds=seconds)) * seconds)


def _ceil(instant: datetime, seconds: int) -> datetime:
    floor = _floor(instant, seconds)
    return floor if floor == instant else floor + timedelta(seconds=seconds)


# ---------------------------------------------------------------- integrations


def integrations_query(account_id: str | None, now: datetime) -> Query:
    """Every integration with events (of one account, or of all): its latest event and its last 24 hours.

    Name and platform are the newest event's, so a renamed integration shows its current name. Events
    stamped after ``now`` (a producer's clock slightly ahead) count as within the last 24 hours.
    """
    conditions, parameters = ([], {}) if account_id is None else (
        ["account_id = {account_id:String}"], {"account_id": account_id})
    newest = "(occurred_at, event_id)"
    sql = (
        "SELECT account_id, integration_id,"
        f" argMax(integration_name, {newest}) AS integration_name,"
        f" argMax(integration_platform, {newest}) AS integration_platform,"
        " max(occurred_at) AS last_event_at,"
        f" argMax(status, {newest}) AS last_status,"
        f" countIf(occurred_at >= {{day_ago:{_TIMESTAMP}}}) AS events_24h,"
        f" countIf(occurred_at >= {{day_ago:{_TIMESTAMP}}} AND status = 'failure') AS failures_24h"
        f" FROM {TABLE}{_where(conditions)}"
        " GROUP BY account_id, integration_id"
        " ORDER BY account_id, lower(integration_name), integration_id"
    )
    return Query(sql, parameters | {"day_ago": now - timedelta(hours=24)})


# ---------------------------------------------------------------- CSV export


def _csv_quoted(sql: str) -> str:
    """A text cell quoted as Python's ``csv`` module quotes it (``QUOTE_MINIMAL``, the ``excel`` dialect):
    in double quotes, inner quotes doubled, when it holds a comma, a double quote, a CR or an LF."""
    return (
        f"if(multiSearchAny({sql}, [',', '\"', '\\r', '\\n']),"
        f" concat('\"', replaceAll({sql}, '\"', '\"\"'), '\"'), {sql})"
    )


# (header, SQL giving the cell's text, the event field it comes from, whether the text may need quoting).
# The created date and event id are the same text the JSON API gives; parameters are compact JSON
# (``toJSONString`` with ``\\/`` unescaped, as ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``).
CSV_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("Created Date", "concat(replaceOne(toString(occurred_at), ' ', 'T'), 'Z')", "occurred_at", False),
    ("Account", "account_id", "account_id", True),
    ("Integration", "integration_name", "integration_name", True),
    ("Type", "toString(type)", "type", True),
    ("Direction", "toString(direction)", "direction", False),
    ("Status", "toString(status)", "status", False),
    ("Message", "message", "message", True),
    ("Template", "message_template", "message_template", True),
    ("Category", "toString(error_category)", "error_category", True),
    ("Parameters", "replaceAll(toJSONString(parameters), '\\\\/', '/')", "parameters", True),
    ("Details", "details", "details", True),
    ("Event ID", "toString(event_id)", "event_id", False),
)
CSV_HEADER: tuple[str, ...] = tuple(header for header, _, _, _ in CSV_COLUMNS)
_CSV_LINE = (
    "concat("
    + ", ',', ".join(_csv_quoted(sql) if quoted else sql for _, sql, _, quoted in CSV_COLUMNS)
    + ", '\\r\\n')"
)


def export_query(flt: EventFilter) -> Query:
    """Every event ``flt`` matches, newest first, each as one finished CSV line (``\\r\\n``-terminated).

    ClickHouse formats the lines (quoting exactly as Python's ``csv`` module does, which the tests check
    value by value) so that an export streams at the engine's speed: read as ``RawBLOB``, the result is the
    CSV body itself. Paging fields are ignored: an export is every matching row, not a page.
    """
    conditions, parameters = _filter_conditions(flt)
    sql = f"SELECT {_CSV_LINE} AS line FROM {TABLE}{_where(conditions)} ORDER BY {_NEWEST_FIRST}"
    return Query(sql, parameters)
