"""The OpenAPI 3 description of the pool's routes, served at /openapi.json."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

VERSIONS = ["2024-02-02-preview", "2024-08-02-preview", "2024-10-02-preview", "2025-02-02-preview",
            "2025-10-02-preview"]
SESSION_VERSIONS = ["2025-02-02-preview", "2025-10-02-preview"]

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_VALUE: dict[str, Any] = {}  # any JSON value


def _param(name: str, schema: dict, where: str = "query", required: bool = True) -> dict:
    return {"name": name, "in": where, "required": required, "schema": schema}


API_VERSION = _param("api-version", {"type": "string", "enum": VERSIONS})
#: on the routes the 2024 preview had, no api-version means 2024-02-02-preview (seed 002's samples)
LEGACY_API_VERSION = {**_param("api-version", {"type": "string", "enum": VERSIONS}, required=False),
                      "description": "Absent: 2024-02-02-preview (the 2024 preview's clients sent none)"}
SESSION_API_VERSION = _param("api-version", {"type": "string", "enum": SESSION_VERSIONS})
IDENTIFIER = _param("identifier", {"type": "string", "pattern": r"^[A-Za-z0-9\-_|&^%$#(){}\[\];<>]{4,128}$"})
PATH = _param("path", {"type": "string"}, required=False)
NAME = _param("name", {"type": "string", "minLength": 1}, where="path")
SKIP = _param("skip", {"type": "integer", "minimum": 0}, required=False)

def _any_case(*words: str) -> dict:
    """A string enum matched in any case, as the pool does (`Inline`, `inline`, `INLINE`)."""
    either = "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in w) for w in words)
    return {"type": "string", "pattern": f"^({either})$", "example": words[0], "nullable": True}


EXECUTION_FIELDS = {
    "codeInputType": _any_case("Inline", "InlineText", "InlineBase64"),
    "executionType": _any_case("Synchronous", "Asynchronous"),
    "code": {"type": "string", "nullable": True},
    "pythonCode": {"type": "string", "nullable": True, "description": "The 2024 preview's name for code"},
    "timeoutInSeconds": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "nullable": True,
                         "description": "At most 220; larger values are clamped"},
    "outputStreamsMaxLength": {"type": "integer", "minimum": 0, "nullable": True},
    "returnJupyterFormatExecutionResult": {"type": "boolean", "nullable": True},
    "returnJupyterFormat": {"type": "boolean", "nullable": True},
    "useEmptyKernel": {"type": "boolean", "nullable": True},
}
SHELL_FIELDS = {
    "shellCommand": {"type": "string", "description": "Run by bash -c"},
    "execCommandAndArgs": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                           "description": "An argv, run without a shell"},
    "stdin": {"type": "string"},
    "timeoutInSeconds": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "nullable": True,
                         "description": "At most 600; larger values are clamped"},
    "outputStreamsMaxLength": {"type": "integer", "minimum": 0, "nullable": True,
                               "description": "Bytes kept per stream (default 4096, silently)"},
    "codeInputType": EXECUTION_FIELDS["codeInputType"], "executionType": EXECUTION_FIELDS["executionType"],
}
SHELL_REQUEST = {"type": "object", "properties": SHELL_FIELDS,
                 "anyOf": [{"required": ["shellCommand"]}, {"required": ["execCommandAndArgs"]}]}
_FIELDS = {"type": "object", "properties": EXECUTION_FIELDS,
           "anyOf": [{"required": ["code"], "properties": {"code": {"type": "string"}}},
                     {"required": ["pythonCode"], "properties": {"pythonCode": {"type": "string"}}}]}
# v1 wraps the fields in `properties`, v2 does not; either route takes either form
EXECUTE_REQUEST = {"anyOf": [{"type": "object", "required": ["properties"], "properties": {"properties": _FIELDS}},
                            _FIELDS]}
UPLOAD = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                             "properties": {"file": {"type": "string", "format": "binary"}}}}}


def _answer(description: str, schema: dict | None = None, media: str = "application/json") -> dict:
    return {"description": description, **({"content": {media: {"schema": schema}}} if schema is not None else {})}


ERRORS = {"400": _answer("Bad request", ERROR), "401": _answer("Missing or wrong token", ERROR),
          "404": _answer("Not found", ERROR), "413": _answer("Too large", ERROR),
          "429": _answer("The pool is full, or the session has 64 executions waiting", ERROR)}


DUPLICATE = {"409": _answer("The session already has an execution with this operation-id", ERROR)}


def _op(summary: str, params: list, ok: dict, body: dict | None = None) -> dict:
    operation: dict[str, Any] = {"summary": summary, "parameters": params, "responses": {**ok, **ERRORS}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


@lru_cache(maxsize=3)
def openapi_document(runtime: str = "python") -> dict[str, Any]:
    """The routes of a pool whose sessions run `runtime` (a Shell pool's executions take shell commands)."""
    session_params = [API_VERSION, IDENTIFIER]
    # a client-chosen execution id; one the session already has is 409 (429 past 64 unfinished executions)
    operation_id = _param("operation-id", {"type": "string", "minLength": 1, "maxLength": 128}, "header", required=False)
    execute_params = [*session_params, operation_id]
    legacy_params = [LEGACY_API_VERSION, IDENTIFIER, operation_id]
    file_params = [LEGACY_API_VERSION, IDENTIFIER, PATH]
    request = SHELL_REQUEST if runtime == "shell" else EXECUTE_REQUEST
    bytes_answer = _answer("The file's bytes", {"type": "string", "format": "binary"}, "application/octet-stream")
    return {
        "openapi": "3.0.3",
        "info": {"title": "remote_kernel local session pool",
                 "description": "The Azure Container Apps dynamic-sessions data plane, served locally. Every route "
                                "is also served under /subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{pool}. "
                                "The hosted pools' MCP server is at /mcp (MCP Streamable HTTP, header x-ms-apikey); "
                                "docs/clients.md lists every form accepted beyond the contract's main ones.",
                 "version": "2025-10-02-preview"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/code/execute": {"post": _op("Execute code (v1 shape)", legacy_params,
                                          {"202": _answer("The execution", {"type": "object"}), **DUPLICATE},
                                          {"application/json": {"schema": request}})},
            "/python/execute": {"post": _op("Execute code (the 2024 preview's route: pythonCode, flat answer)",
                                            legacy_params, {"200": _answer("The execution", {"type": "object"}),
                                                            **DUPLICATE},
                                            {"application/json": {"schema": request}})},
            "/executions": {"post": _op("Execute code (v2 shape)", execute_params,
                                        {"200": _answer("The execution (2025-10-02-preview)", {"type": "object"}),
                                         "202": _answer("The execution", {"type": "object"}), **DUPLICATE},
                                        {"application/json": {"schema": request}})},
            "/executions/{execution_id}": {"get": _op(
                "An execution's state (v2)",
                [API_VERSION, IDENTIFIER, _param("execution_id", {"type": "string"}, "path")],
                {"200": _answer("The execution", {"type": "object"})})},
            "/files/upload": {"post": _op("Upload files (v1 shape)", file_params,
                                          {"200": _answer("The files", {"type": "object"})}, UPLOAD)},
            "/files": {
                "post": _op("Upload a file (v2 shape)", file_params, {"200": _answer("The file", {"type": "object"})},
                            UPLOAD),
                "get": _op("List files", file_params, {"200": _answer("The files", {"type": "object"})}),
            },
            "/files/content/{name}": {"get": _op("Download a file (v1)", file_params + [NAME], {"200": bytes_answer})},
            "/files/{name}/content": {"get": _op("Download a file (v2)", file_params + [NAME], {"200": bytes_answer})},
            "/files/{name}": {
                "get": _op("A file's metadata", file_params + [NAME], {"200": _answer("The file", {"type": "object"})}),
                "delete": _op("Delete a file", file_params + [NAME],
                              {"200": _answer("Deleted (v1)", {"type": "object"}), "204": _answer("Deleted (v2)")}),
            },
            "/session": {
                "get": _op("A session's details", [SESSION_API_VERSION, IDENTIFIER],
                           {"200": _answer("The session", {"type": "object"})}),
                "delete": _op("Delete a session with its processes and files", session_params,
                              {"204": _answer("Deleted")}),
            },
            "/listSessions": {"get": _op("List sessions", [SESSION_API_VERSION, SKIP],
                                         {"200": _answer("A page of sessions", {"type": "object"})})},
            "/metadata": {"get": _op("Runtimes and pre-installed packages", [SESSION_API_VERSION],
                                     {"200": _answer("The pool's metadata", {"type": "object"})})},
            "/.management/getSession": {"post": _op("A session's details (management dialect)", session_params,
                                                    {"200": _answer("The session", {"type": "object"})})},
            "/.management/listSessions": {"post": _op("List sessions (management dialect)", [API_VERSION, SKIP],
                                                      {"200": _answer("A page of sessions", {"type": "object"})})},
            "/.management/stopSession": {"post": _op("Stop a session (management dialect)", session_params,
                                                     {"200": _answer("Stopped", {"type": "string"}, "text/plain")})},
            "/health": {"get": {"summary": "Whether the pool is up", "security": [],
                                "responses": {"200": _answer("Up", {"type": "object"})}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    }
