"""Noticing that the remote state is gone, although the pool never announces it.

A pool creates a new session implicitly when an identifier's session has expired, was deleted
or lost its worker. Two ways to notice, neither costing a request per cell:

- the `x-ms-session-guid` of each execution (the local pool sends it): a new value means a
  new session;
- for a pool that sends no guid, the session's creation time, read once after the first cell
  and again only before a cell that follows an idle spell (sessions expire only when idle).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING

from remote_kernel.sessions.models import SessionNotFound, SessionsError

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

SESSION_LOST = ("The remote session was lost (it expired after being idle, was deleted, or its worker stopped): "
                "variables, imports and files from earlier cells are gone. This cell runs in a new session.\n")

IDLE_BEFORE_CHECK = 60.0  # seconds without contact after which a guid-less pool is asked about the session
INFO_DEADLINE = 5.0
GONE = object()


class SessionContinuity:
    """Tracks which session answered; says once when that changed."""

    def __init__(self) -> None:
        self.guid: str | None = None
        self.created_at: datetime | None = None
        self.pool_sends_guid = False
        self.executed = False
        self.reported = False  # the loss was already told (by an error), so the new session is quiet
        self.can_probe = True  # False once the pool showed it cannot tell a session's creation time
        self.last_contact = time.monotonic()

    def reset(self) -> None:
        """A new session on purpose (`%session new`): nothing to report."""
        self.__init__()  # type: ignore[misc]  # every field back to a fresh session's

    def lost(self) -> None:
        """An error already told the user that the session is gone."""
        self.reported = True
        self.guid = self.created_at = None

    async def before_cell(self, client: SessionsClient) -> str | None:
        """For a pool without guids, after an idle spell: the lost-state notice, if the session changed."""
        if (self.pool_sends_guid or not self.can_probe or not self.executed
                or time.monotonic() - self.last_contact < IDLE_BEFORE_CHECK):
            return None
        state = await self._probe(client)
        if state is None:
            self.can_probe = False
            return None
        previous = self.created_at
        self.created_at = state if isinstance(state, datetime) else None
        if state is GONE or (previous is not None and state != previous):
            notice = None if self.reported else SESSION_LOST
            self.reported = True
            return notice
        return None

    async def after_execution(self, client: SessionsClient, guid: str | None) -> str | None:
        """Record who answered; the lost-state notice when it is another session than before."""
        self.last_contact = time.monotonic()
        self.executed = True
        if guid is not None:
            self.pool_sends_guid = True
            notice = SESSION_LOST if self.guid is not None and guid != self.guid and not self.reported else None
            self.guid, self.reported = guid, False
            return notice
        if self.created_at is None and self.can_probe:
            state = await self._probe(client)
            self.can_probe = state is not None
            self.created_at = state if isinstance(state, datetime) else None
        self.reported = False  # this session has been used: a later loss is news again
        return None

    def touched(self) -> None:
        """Any successful call on the session resets its idle clock."""
        self.last_contact = time.monotonic()

    @staticmethod
    async def _probe(client: SessionsClient) -> datetime | object | None:
        """The session's creation time, GONE when it does not exist, None when the pool cannot say."""
        try:
            info = await asyncio.wait_for(client.session_info(), INFO_DEADLINE)
        except SessionNotFound:
            return GONE
        except (SessionsError, asyncio.TimeoutError):
            return None  # a version without session routes, or no answer: nothing to compare
        return info.created_at
