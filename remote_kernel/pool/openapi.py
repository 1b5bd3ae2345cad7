"""The OpenAPI 3 document served at /openapi.json, generated from the app's routes.

Each route in `app.py` carries its `Operation` (summary, parameters, answers, body) beside it; this
module holds the shared pieces and turns the route table into the document, so a route cannot be
served without being described. The answers of the official operations are described with the
official documents' own schemas (`pool/official`, put in `components.schemas` under their names);
where a route also answers in the v1 shape, that form is described beside the official one (anyOf).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from remote_kernel.contract import (
    API_VERSIONS,
    EXECUTION_LIMIT,
    IDENTIFIER_PATTERN,
    LEGACY_API_VERSION,
    SESSION_API_VERSIONS,
    SHELL_EXECUTION_LIMIT,
)
from remote_kernel.pool.official import component_schemas
from remote_kernel.pool.runtimes import policy_of

#: the official schemas (the newest document's: it has every field of the older ones)
OFFICIAL_SCHEMAS = component_schemas()


def official(name: str) -> dict[str, Any]:
    """A reference to an official schema (KeyError if the documents have no such schema)."""
    OFFICIAL_SCHEMAS[name]
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = official("Azure.Core.Foundations.ErrorResponse")
OBJECT = {"type": "object"}


def param(name: str, schema: dict[str, Any], where: str = "query", required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


API_VERSION = param("api-version", {"type": "string", "enum": list(API_VERSIONS)})
#: on the routes the 2024 preview had, no api-version means that preview (seed 002's samples)
LEGACY_API_VERSION_PARAM = {**param("api-version", {"type": "string", "enum": list(API_VERSIONS)}, required=False),
                            "description": f"Absent: {LEGACY_API_VERSION} (the 2024 preview's clients sent none)"}
SESSION_API_VERSION = param("api-version", {"type": "string", "enum": list(SESSION_API_VERSIONS)})
IDENTIFIER = param("identifier", {"type": "string", "pattern": f"^{IDENTIFIER_PATTERN}$"})
PATH = param("path", {"type": "string"}, required=False)
NAME = param("name", {"type": "string", "minLength": 1}, where="path")
FILE = param("file", {"type": "string", "minLength": 1})  # /downloadFile's name of the file
SKIP = {**param("skip", {"type": "integer"}, required=False), "description": "Sessions to skip; less than 0 is 0"}
RECURSIVE = {**param("recursive", {"type": "boolean"}, required=False),
             "description": "2025-10-02-preview on: every entry under the folder, each with its `directory`"}
EXECUTION_ID = param("executionId", {"type": "string"}, "path")
LIVE_EXECUTION = param("execution", {"type": "string"}, required=False)
#: a client-chosen execution id; one the session already has is 409 (429 past 64 unfinished executions)
OPERATION_ID = param("operation-id", {"type": "string", "minLength": 1, "maxLength": 128}, "header", required=False)

SESSION_PARAMS = (API_VERSION, IDENTIFIER)
EXECUTE_PARAMS = (API_VERSION, IDENTIFIER, OPERATION_ID)
LEGACY_EXECUTE_PARAMS = (LEGACY_API_VERSION_PARAM, IDENTIFIER, OPERATION_ID)
FILE_PARAMS = (LEGACY_API_VERSION_PARAM, IDENTIFIER, PATH)


def _any_case(*words: str) -> dict[str, Any]:
    """A string enum matched in any case, as the pool does (`Inline`, `inline`, `INLINE`)."""
    either = "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in w) for w in words)
    return {"type": "string", "pattern": f"^({either})$", "example": words[0], "nullable": True}


EXECUTION_FIELDS = {
    "codeInputType": _any_case("Inline", "InlineText", "InlineBase64"),
    "executionType": _any_case("Synchronous", "Asynchronous"),
    "code": {"type": "string", "nullable": True},
    "pythonCode": {"type": "string", "nullable": True, "description": "The 2024 preview's name for code"},
    "timeoutInSeconds": {"type": "number", "nullable": True,
                         "description": f"At most {EXECUTION_LIMIT:g}; larger values are clamped; 0 or less: the default"},
    "outputStreamsMaxLength": {"type": "integer", "minimum": 0, "nullable": True},
    "returnJupyterFormatExecutionResult": {"type": "boolean", "nullable": True},
    "returnJupyterFormat": {"type": "boolean", "nullable": True},
    "useEmptyKernel": {"type": "boolean", "nullable": True,
                       "description": "Run this execution in a fresh interpreter of its own (its own empty /mnt/data)"},
}
SHELL_FIELDS = {
    "shellCommand": {"type": "string", "description": "Run by bash -c"},
    "execCommandAndArgs": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                           "description": "An argv, run without a shell"},
    "stdin": {"type": "string"},
    "timeoutInSeconds": {"type": "number", "nullable": True,
                         "description": f"At most {SHELL_EXECUTION_LIMIT:g}; larger values are clamped; 0 or less: "
                                        "the default"},
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


def answer(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, **({"content": {media: {"schema": schema}}} if schema is not None else {})}


ERRORS = {"400": answer("Bad request", ERROR), "401": answer("Missing or wrong token", ERROR),
          "404": answer("Not found", ERROR), "413": answer("Too large", ERROR),
          "429": answer("The pool is full, or the session has 64 executions waiting", ERROR)}
DUPLICATE = {"409": answer("The session already has an execution with this operation-id", ERROR)}
FILE_BYTES = {"200": answer("The file's bytes", {"type": "string", "format": "binary"}, "application/octet-stream")}
#: the v1 shape's answers (api-version 2024-08-02-preview and older; no official document describes them)
V1_EXECUTION = {"type": "object", "required": ["properties"], "description": "v1: {$id, properties: {status, stdout, "
                "stderr, result, executionResult, executionTimeInMilliseconds}}"}
V1_FILES = {"type": "object", "required": ["value"],
            "description": "v1: {$id, value: [{$id, properties: {$id, filename, size, lastModifiedTime}}]}"}
V1_DELETED = {"type": "object", "required": ["message"], "description": "v1: {message}"}
EXECUTION_HEADERS = {"Operation-Location": {"description": "Where to poll the execution",
                                            "schema": {"type": "string", "format": "uri"}},
                     "operation-id": {"schema": {"type": "string"}}}
EXECUTION = {**answer("The execution", official("SessionCodeExecutionResource")), "headers": EXECUTION_HEADERS}
V1_EXECUTION_ANSWER = {**answer("The execution (v1 shape)", V1_EXECUTION), "headers": EXECUTION_HEADERS}


def either(description: str, schema: dict[str, Any], v1: dict[str, Any]) -> dict[str, Any]:
    """An answer in the official shape, or in the v1 shape when the request's api-version is a v1 one."""
    return answer(description, {"anyOf": [schema, v1]})
#: the security of the routes anyone may call, and of the MCP server's own key
PUBLIC: list[dict[str, Any]] = []
MCP_KEY: list[dict[str, Any]] = [{"mcpKey": []}]


@dataclass(frozen=True)
class Operation:
    """One method of one route, as the document describes it."""

    summary: str
    params: tuple[dict[str, Any], ...] = ()
    answers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    body: Mapping[str, dict[str, Any]] | None = None  # media type → {"schema": …}
    executes: bool = False  # the body is an execution request (its schema depends on the sessions' runtime)
    security: list[dict[str, Any]] | None = None  # None: the bearer token, and its errors
    description: str | None = None

    def as_dict(self, runtime: str) -> dict[str, Any]:
        operation: dict[str, Any] = {"summary": self.summary, "parameters": list(self.params)}
        if self.description:
            operation["description"] = self.description
        operation["responses"] = {**self.answers, **(ERRORS if self.security is None else {})}
        body = self.body
        if self.executes:
            body = {"application/json": {"schema": SHELL_REQUEST if policy_of(runtime).shell_body else EXECUTE_REQUEST}}
        if body is not None:
            operation["requestBody"] = {"required": True, "content": dict(body)}
        if self.security is not None:
            operation["security"] = self.security
        return operation


class UndocumentedRoute(LookupError):
    """A route of the app has no Operation for one of its methods."""


class ApiRoute(Route):
    """A route with its OpenAPI operation per method beside it (this module makes the document from them)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], operations: dict[str, Operation]) -> None:
        super().__init__(path, endpoint, methods=list(operations))
        self.operations = operations


def op(summary: str, params: tuple[dict[str, Any], ...], answers: dict[str, dict[str, Any]],
       **more: Any) -> dict[str, Operation]:
    """The route's one method: POST if it takes a body, else GET (DELETE routes say so with `method`)."""
    method = more.pop("method", "POST" if more.get("body") or more.get("executes") else "GET")
    return {method: Operation(summary, params, answers, **more)}


def flattened(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route with its full path format, mounted route lists opened."""
    for route in routes:
        if isinstance(route, Mount):
            yield from flattened(route.routes, prefix + route.path)
        else:
            yield prefix + getattr(route, "path_format", ""), route


def openapi_document(routes: Iterable[BaseRoute], runtime: str = "python") -> dict[str, Any]:
    """The document of `routes` (each with `operations`: method → Operation) for sessions running `runtime`."""
    paths: dict[str, dict[str, Any]] = {}
    for path, route in flattened(routes):
        operations: Mapping[str, Operation] = getattr(route, "operations", {})
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            if method not in operations:
                raise UndocumentedRoute(f"The route {method} {path} has no OpenAPI operation: give it one "
                                        "in pool/app.py's route table (see openapi.Operation).")
            paths.setdefault(path, {})[method.lower()] = operations[method].as_dict(runtime)
    return {
        "openapi": "3.0.3",
        "info": {"title": "remote_kernel local session pool",
                 "description": "The Azure Container Apps dynamic-sessions data plane, served locally. Every route "
                                "is also served under /subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{pool}. "
                                "docs/clients.md lists every form accepted beyond the contract's main ones.",
                 "version": API_VERSIONS[-1]},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "mcpKey": {"type": "apiKey", "in": "header", "name": "x-ms-apikey"}},
            "schemas": OFFICIAL_SCHEMAS,
        },
    }
