"""Who is asking, and which account they may read.

An API key belongs to one account and sees only that account's events, by
any route (list, detail, CSV, counters); the operator key sees every account.
Keys are compared in constant time and never logged. Another account's
resources answer 404, so a key cannot even learn that they exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi import HTTPException


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; ``account_id`` None means the operator, who sees every account."""

    account_id: str | None

    @property
    def is_operator(self) -> bool:
        return self.account_id is None

    def account_scope(self, requested: str | None) -> str | None:
        """The account a query reads: the caller's own (404 when another is asked for), or any for the operator."""
        if self.is_operator:
            return requested
        if requested not in (None, "", self.account_id):
            raise HTTPException(404, f"no account {requested}")
        return self.account_id


class KeyRing:
    """The operator key and the per-account API keys the API accepts."""

    def __init__(self, operator_key: str = "", api_keys: dict[str, str] | None = None) -> None:
        self._operator_key = operator_key.encode()
        self._api_keys = [(key.encode(), account) for key, account in (api_keys or {}).items()]

    def identify(self, presented: str | None) -> Caller:
        """The caller a presented key stands for; 401 when it is missing or matches no key."""
        given = (presented or "").encode()
        # Every key is compared, whatever matched, so timing says nothing about which one did.
        operator = bool(self._operator_key) & secrets.compare_digest(given, self._operator_key)
        account = None
        for key, owner in self._api_keys:
            if secrets.compare_digest(given, key):
                account = owner
        if given and operator:
            return Caller(account_id=None)
        if given and account is not None:
            return Caller(account_id=account)
        raise HTTPException(
            401, "An API key is required: send Authorization: Bearer <key> (or the X-API-Key header).",
            headers={"WWW-Authenticate": "Bearer"},
        )
