"""The pool's memory bound for what sessions make it hold: queued code and kept answers, in bytes.

Every other thing a session can make the pool hold has its own fixed bound per session (a reply line
being read, live output events; see workers/PROTOCOL.md, "The pool's memory"). These two grow with
what clients send and what sessions print, so they are counted here, in the bytes they take in the
pool's memory (a str of 4-byte characters counts 4 bytes each), per session and for the whole pool:

- queued code (of executions queued or running): at most QUEUED_PER_SESSION per session and
  QUEUED_PER_POOL for all; past either a new execution is refused (429, saying what to do);
- kept answers (finished executions kept for polling): at most KEPT_PER_SESSION per session and
  KEPT_PER_POOL for all, besides each session's newest answer; past either the session that adds an
  answer forgets its oldest ones (an unfinished execution is never forgotten).
"""
from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
QUEUED_PER_SESSION = 32 * MIB  # two of the largest bodies the pool accepts (16 MiB)
QUEUED_PER_POOL = 256 * MIB
KEPT_PER_SESSION = 16 * MIB
KEPT_PER_POOL = 256 * MIB


class OverBudget(Exception):
    """Queued code would pass its bound; the message says which, and what to do."""


@dataclass
class Budget:
    """The pool's totals (one per pool process; the sessions keep their own share)."""

    queued: int = 0
    kept: int = 0

    def queue(self, session_queued: int, size: int) -> None:
        """Count `size` more bytes of queued code for a session holding `session_queued`; OverBudget if
        that passes the session's or the pool's bound (nothing is counted then)."""
        if session_queued + size > QUEUED_PER_SESSION and session_queued:
            raise OverBudget(f"This session already has {session_queued / MIB:.1f} MiB of code queued or running "
                             f"and this execution adds {size / MIB:.1f} MiB (the limit is "
                             f"{QUEUED_PER_SESSION // MIB} MiB per session); wait for its executions to finish, "
                             "then retry.")
        if self.queued + size > QUEUED_PER_POOL and session_queued + self.queued:
            raise OverBudget(f"The pool already holds {self.queued / MIB:.1f} MiB of queued code for all its "
                             f"sessions (the limit is {QUEUED_PER_POOL // MIB} MiB); retry once some executions "
                             "have finished.")
        self.queued += size

    def unqueue(self, size: int) -> None:
        self.queued -= size

    def over_kept(self, session_kept: int) -> bool:
        """Whether a session keeping `session_kept` bytes of answers must forget its oldest."""
        return session_kept > KEPT_PER_SESSION or self.kept > KEPT_PER_POOL


#: this process's pool (a pool is one process: `remote-kernel pool`)
POOL = Budget()
