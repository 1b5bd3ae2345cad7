"""Facts of the hosted dynamic-sessions contract, each written once (API-CONTRACT.md has the evidence).

Standard library only: the kernel's configuration reads it without importing httpx, and the client
(`sessions`) and the local pool (`pool`) both read it without importing each other.
"""
from __future__ import annotations

import re

#: the two wire shapes' api-versions, oldest first (v1 wraps bodies in `properties`; v2 does not)
V1_API_VERSIONS = ("2024-02-02-preview", "2024-08-02-preview")
V2_API_VERSIONS = ("2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview")
API_VERSIONS = V1_API_VERSIONS + V2_API_VERSIONS
DEFAULT_API_VERSION = "2025-10-02-preview"
#: versions that have `GET session`, `GET listSessions` and `GET metadata`
SESSION_API_VERSIONS = ("2025-02-02-preview", "2025-10-02-preview")
#: versions whose execute request can ask for the interpreter's display repr of the result
JUPYTER_REPR_VERSIONS = ("2025-10-02-preview",)
#: what a request without api-version means: the 2024 preview's clients sent none (seed 002's samples)
LEGACY_API_VERSION = "2024-02-02-preview"

#: a session identifier: 4 to 128 of these characters (a uuid4 is best). The official documents'
#: pattern (all three api-versions), the same set of characters written once; identifiers are query
#: parameters and keys of the pool's table, never a file name
IDENTIFIER_PATTERN = r"""[a-zA-Z0-9_|}{\[\]:"';<>?/.,@#$%^&*()\-+=!~`]{4,128}"""
IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
IDENTIFIER_RULE = ("4 to 128 characters: letters, digits, or any of _|}{[]:\"';<>?/.,@#$%^&*()-+=!~` "
                   "(no spaces; a uuid4 is best)")

#: the hosted service's cap on one execution, in seconds (code-interpreter pools)
EXECUTION_LIMIT = 220.0
#: the hosted cap on one execution of a Shell pool, in seconds
SHELL_EXECUTION_LIMIT = 600.0

#: how a client proves itself: an Entra ID token, a static bearer token, or nothing (a local pool)
AUTH_MODES = ("azure", "token", "none")
