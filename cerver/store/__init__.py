"""Durable state. SQLite embedded by default, PostgreSQL for clusters, one schema."""

from __future__ import annotations

from dataclasses import dataclass

from cerver.store.accounts import Account, Accounts
from cerver.store.browser_sessions import BrowserSessions
from cerver.store.computes import ComputeRow, Computes
from cerver.store.credentials import Credentials
from cerver.store.db import engine_for
from cerver.store.llm_spend import LlmSpend
from cerver.store.observations import Observations
from cerver.store.relay import Relays
from cerver.store.sessions import SessionRow, Sessions, TranscriptEntry


@dataclass
class Store:
    accounts: Accounts
    sessions: Sessions
    computes: Computes
    credentials: Credentials
    observations: Observations
    llm_spend: LlmSpend
    browser_sessions: BrowserSessions
    relays: Relays

    @classmethod
    def open(cls, url: str) -> Store:
        engine = engine_for(url)
        computes = Computes(engine)
        return cls(
            Accounts(engine),
            Sessions(engine),
            computes,
            Credentials(engine),
            Observations(engine),
            LlmSpend(engine),
            BrowserSessions(engine),
            Relays(engine, computes),
        )


__all__ = [
    "Account",
    "Accounts",
    "BrowserSessions",
    "ComputeRow",
    "Computes",
    "Credentials",
    "LlmSpend",
    "Observations",
    "Relays",
    "SessionRow",
    "Sessions",
    "Store",
    "TranscriptEntry",
]
