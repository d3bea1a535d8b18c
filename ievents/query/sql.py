"""Read-only SQL over the Integration Events tables, for analysts and operators.

Read-only is enforced by ClickHouse itself, with ``readonly = 1``: the engine
refuses every write, DDL, ``SYSTEM`` statement, table function that reaches
outside (``file``, ``url`` ...) and setting change. How the setting reaches the
engine depends on the backend, because a per-query ``SETTINGS`` clause is not
safe on both:

- chDB: the query runs on a *fresh connection handle* to the same engine,
  whose session gets the limits and then ``readonly = 1`` before the query is
  sent unchanged. The shared client (the sink's, the API's) is never touched:
  clickhouse-connect sends per-query settings of some statements as ``SET``
  on the handle, and chDB applies a trailing ``SETTINGS`` clause of a DDL
  statement to the whole session, so either would leave a shared handle
  read-only or worse. The fresh handle is thrown away afterwards.
- a ClickHouse server (HTTP): the settings travel as URL parameters of that
  one request; the server checks them all before applying any, then runs the
  query under ``readonly = 1``.

Before anything reaches ClickHouse, :func:`check_statement` accepts exactly one
statement of a reading kind (``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``,
``EXPLAIN``, ``EXISTS``) and refuses ``INTO OUTFILE`` (which chDB executes even
under ``readonly = 1``, writing a file on the host). That check gives the clear
message; ``readonly = 1`` is the guarantee. Results are capped by
``max_result_rows`` (``result_overflow_mode = 'break'``, then cut to the limit
here) and by ``max_execution_time``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_TIMEOUT",
    "MAX_LIMIT",
    "READ_KINDS",
    "SqlError",
    "SqlResult",
    "WriteRefused",
    "check_statement",
    "readonly_settings",
    "run_readonly",
]

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
DEFAULT_TIMEOUT = 30.0
READ_KINDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})

# ClickHouse error code READONLY: "Cannot execute query in readonly mode", "Cannot modify '...' setting".
_READONLY_ERROR = 164

_SCHEMA_KINDS = frozenset(
    {"CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "ATTACH", "DETACH", "EXCHANGE", "UNDROP", "REPLACE"}
)
_ADVICE = {
    "INSERT": "Events enter through the pipeline: use the producer SDK (or `ievents simulate` for test data) instead.",
    **dict.fromkeys(
        _SCHEMA_KINDS,
        "Schema changes are numbered migrations: add one to ievents/sink/migrations/ "
        "and use `ievents migrate` instead.",
    ),
}
_ADMIN_ADVICE = "Use clickhouse-client as a ClickHouse administrator instead."
# Statements that change something (data, schema, settings, users, the server); any other word is no statement.
_WRITE_KINDS = _SCHEMA_KINDS | {
    "INSERT", "DELETE", "UPDATE", "OPTIMIZE", "SYSTEM", "KILL", "SET", "USE", "GRANT", "REVOKE", "BACKUP", "RESTORE",
    "MOVE", "CHECK", "BEGIN", "COMMIT", "ROLLBACK", "WATCH", "UNDROP",
}


class SqlError(ValueError):
    """The query cannot run; the message says why (a refusal, bad syntax, an unknown column, a timeout ...)."""


class WriteRefused(SqlError):
    """The statement would change something (data, schema, settings, files): ``ievents sql`` only reads."""


@dataclass(frozen=True)
class SqlResult:
    """Column names, ClickHouse type names and rows, every value JSON-friendly.

    Timestamps are ISO 8601 UTC (``...Z``), UUIDs, IPs and decimals strings (a
    decimal keeps its exact digits), NaN and infinities ``None``, tuples lists.
    ``truncated`` says more rows matched than ``limit``.
    """

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool = False


def run_readonly(
    client: Client, sql: str, limit: int = DEFAULT_LIMIT, *, timeout: float = DEFAULT_TIMEOUT
) -> SqlResult:
    """Run one read-only statement; at most ``limit`` rows, at most ``timeout`` seconds.

    Raises :class:`WriteRefused` for anything that would write (refused here or
    by ClickHouse's ``readonly = 1``) and :class:`SqlError` for everything else
    that stops the query (several statements, syntax, unknown names, timeout).
    ``client`` is left exactly as it was: no setting of its session changes.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise SqlError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    statement = check_statement(sql)
    try:
        with _readonly_session(client, readonly_settings(limit, timeout)) as (session, per_query):
            result = session.query(statement, settings=per_query, tz_mode="aware")
            rows = result.result_rows
    except DatabaseError as exc:
        raise _refusal(exc) from None
    return SqlResult(
        columns=list(result.column_names),
        types=[column_type.name for column_type in result.column_types],
        rows=[[_jsonable(value) for value in row] for row in rows[:limit]],
        truncated=len(rows) > limit,
    )


def readonly_settings(limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """The ClickHouse settings of one read-only query, ``readonly`` last (it forbids changing the others).

    ``max_result_rows`` is one past the limit so that "more rows matched" can be told from "exactly limit rows".
    """
    return {
        "max_execution_time": max(1, math.ceil(timeout)),
        "max_result_rows": limit + 1,
        "result_overflow_mode": "break",
        "readonly": 1,
    }


def check_statement(sql: str) -> str:
    """The one reading statement in ``sql``, without its trailing ``;``; raises otherwise.

    The SQL is tokenised the way ClickHouse's lexer does (quoted strings and
    identifiers, ``--``/``#``/nested ``/* */`` comments, ``$$`` heredocs), so a
    ``;`` or a keyword inside a string or a comment counts for nothing.
    """
    statements = _statements(sql)
    if not statements:
        raise SqlError("No SQL statement given.")
    for tokens in statements:
        _check_kind(tokens)
    if len(statements) > 1:
        raise SqlError(
            f"ievents sql runs one statement at a time; this has {len(statements)}. Send each statement on its own."
        )
    tokens = statements[0]
    return sql[tokens[0].start : tokens[-1].end]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "number", "quoted" (string, quoted identifier, heredoc), "punct"
    text: str
    start: int
    end: int


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_HEREDOC = re.compile(r"\$([A-Za-z0-9_]*)\$")


def _statements(sql: str) -> list[list[_Token]]:
    """Tokens of each ``;``-separated statement, empty statements dropped."""
    statements: list[list[_Token]] = [[]]
    for token in _tokens(sql):
        if token.kind == "punct" and token.text == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    return [tokens for tokens in statements if tokens]


def _tokens(sql: str) -> Iterator[_Token]:
    """Significant tokens of ClickHouse SQL; whitespace and comments are skipped."""
    index, end = 0, len(sql)
    while index < end:
        char = sql[index]
        if char.isspace():
            index += 1
        elif sql.startswith("--", index) or (char == "#" and sql[index + 1 : index + 2] in (" ", "!")):
            newline = sql.find("\n", index)
            index = end if newline < 0 else newline + 1
        elif sql.startswith("/*", index):
            index = _skip_block_comment(sql, index)
        elif char in "'\"`":
            stop = _skip_quoted(sql, index)
            yield _Token("quoted", sql[index:stop], index, stop)
            index = stop
        elif char == "$" and (heredoc := _HEREDOC.match(sql, index)):
            closing = sql.find(heredoc.group(0), heredoc.end())
            stop = end if closing < 0 else closing + len(heredoc.group(0))
            yield _Token("quoted", sql[index:stop], index, stop)
            index = stop
        elif match := _WORD.match(sql, index) or _NUMBER.match(sql, index):
            yield _Token("word" if match.re is _WORD else "number", match.group(0), index, match.end())
            index = match.end()
        else:
            yield _Token("punct", char, index, index + 1)
            index += 1


def _skip_block_comment(sql: str, index: int) -> int:
    """Past the end of a ``/* */`` comment starting at ``index`` (ClickHouse nests them)."""
    depth = 0
    while index < len(sql):
        if sql.startswith("/*", index):
            depth, index = depth + 1, index + 2
        elif sql.startswith("*/", index):
            depth, index = depth - 1, index + 2
            if depth == 0:
                return index
        else:
            index += 1
    return len(sql)


def _skip_quoted(sql: str, index: int) -> int:
    """Past the closing quote of the string or identifier opened at ``index`` (backslash and doubled quotes escape)."""
    quote, index = sql[index], index + 1
    while index < len(sql):
        char = sql[index]
        if char == "\\":
            index += 2
        elif char == quote:
            if sql[index + 1 : index + 2] == quote:
                index += 2
            else:
                return index + 1
        else:
            index += 1
    return len(sql)


def _check_kind(tokens: list[_Token]) -> None:
    """Refuse a statement that is not a read, with advice on what to use instead."""
    words = [token.text.upper() if token.kind == "word" else token.text for token in tokens]
    kind = next((word for word in words if word != "("), words[0])
    reads = ", ".join(sorted(READ_KINDS - {"DESC"}))
    if kind in _WRITE_KINDS:
        raise WriteRefused(
            f"ievents sql is read-only: {kind} statements are refused; it runs {reads} only. "
            f"{_ADVICE.get(kind, _ADMIN_ADVICE)}"
        )
    if kind not in READ_KINDS:
        raise SqlError(f"ievents sql runs {reads} statements; {kind!r} starts none of them.")
    pairs = set(zip(words, words[1:]))
    if ("INTO", "OUTFILE") in pairs:
        raise WriteRefused(
            "ievents sql is read-only: INTO OUTFILE writes a file on the ClickHouse host. "
            'Use `ievents sql --csv "SELECT ..." > file.csv` instead.'
        )
    if ("INSERT", "INTO") in pairs:  # WITH ... INSERT INTO is an insert
        raise WriteRefused(f"ievents sql is read-only: INSERT statements are refused. {_ADVICE['INSERT']}")


# ---------------------------------------------------------------- execution


@contextmanager
def _readonly_session(client: Client, settings: dict[str, Any]) -> Iterator[tuple[Client, dict[str, Any]]]:
    """A client to run the query on and the settings to send with it (see the module docstring)."""
    from clickhouse_connect.driver._chdbclient import ChdbClient

    if not isinstance(client, ChdbClient):
        yield client, settings
        return
    # Same path, same engine (chDB allows one per process): a second handle, not a second folder.
    session = ChdbClient(path=client.path, database=client.database, settings=settings)
    try:
        yield session, {}
    finally:
        session.close()


def _refusal(exc: DatabaseError) -> SqlError:
    """ClickHouse's refusal as ``WriteRefused`` when ``readonly`` stopped it, else as ``SqlError``."""
    message = re.sub(r"\s*\(version [^)]*\)", "", str(exc)).strip()
    if getattr(exc, "code", None) == _READONLY_ERROR:
        # "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)" -> the words only
        reason = re.sub(r"(Code: \d+\. DB::Exception: )+((?!Code\b)\w+: )?", "", message)
        reason = re.sub(r"(\s*\([A-Z_]+\)\.?)+$", "", reason).strip().rstrip(".")
        return WriteRefused(f"ievents sql is read-only: ClickHouse refused the query: {reason}. {_ADMIN_ADVICE}")
    return SqlError(message)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal, IPv4Address, IPv6Address)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(_jsonable(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    return str(value)
