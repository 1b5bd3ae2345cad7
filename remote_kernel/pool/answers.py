"""The answers' shapes, per wire shape and api-version: executions, files, sessions.

A route that exists in one wire shape only answers in that shape (`code/execute` is v1, `executions`
is v2); a route both shapes share (`files`, `files/{name}`) answers in the shape of the request's
api-version. Version differences are data here (EXECUTE_STATUS, FILE_ANSWERS), not branches in the
routes; runtime differences come from the runtime's AnswerPolicy (runtimes.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from remote_kernel.pool import files
from remote_kernel.pool.checks import version_of
from remote_kernel.pool.runtimes import AnswerPolicy
from remote_kernel.pool.session import Outcome, Session
from remote_kernel.pool.values import hosted_value

#: the HTTP status of an execute answer, by the route's shape: 202 in the v1 shape (seed 004's samples), 200 in
#: the v2 shape whatever the api-version, as all three official documents say (seed 004 and an older revision
#: of the spec show 202 for 2024-10-02-preview; every client found accepts any 2xx; docs/clients.md)
EXECUTE_STATUS = {"v1": 202, "v2": 200}
#: where the gate keeps the Azure-style prefix it took off the path (answers that name a URL put it back)
PREFIX_KEY = "remote_kernel.azure_prefix"


# executions ---------------------------------------------------------------------------------------

def result_value(outcome: Outcome, policy: AnswerPolicy) -> Any:
    """The execution's value as the request asked for it (pool/values.py has the evidence)."""
    if not policy.hosted_values or outcome.jupyter:
        return outcome.result
    return hosted_value(outcome.result)


def trimmed(text: str, cap: int | None) -> str:
    return text if cap is None or len(text) <= cap else text[:cap]


def trimmed_bytes(text: str, cap: int | None) -> str:
    """Shell streams are cut at `cap` bytes of UTF-8, silently, as hosted Shell pools do."""
    if cap is None:
        return text
    data = text.encode("utf-8", "replace")
    return text if len(data) <= cap else data[:cap].decode("utf-8", "ignore")


def absolute_url(request: Request, path: str) -> str:
    """`path` (with its query) as an absolute URL of this pool, under the Azure-style prefix the request had."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get(PREFIX_KEY, '')}{path}"


def execution_headers(request: Request, session: Session, outcome: Outcome, version_name: str) -> dict[str, str]:
    identifier = quote(session.identifier or "", safe="")
    location = f"/executions/{quote(outcome.id, safe='')}?api-version={version_name}&identifier={identifier}"
    return {"operation-id": outcome.id,
            "Operation-Location": absolute_url(request, location),  # a uri in the official documents
            "x-ms-session-guid": session.guid,
            "x-ms-execution-request-time": f"{outcome.ms or 0:.3f}",
            "x-ms-container-execution-duration": str(int(outcome.ms or 0))}


def is_image(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "image"


def v1_execution(outcome: Outcome, cap: int | None, policy: AnswerPolicy) -> dict[str, Any]:
    status = {"Succeeded": "Success", "Failed": "Failure"}.get(outcome.status, outcome.status)
    value = result_value(outcome, policy)
    properties: dict[str, Any] = {
        "$id": "2", "status": status, "stdout": trimmed(outcome.stdout, cap), "stderr": trimmed(outcome.stderr, cap),
        "result": value, "executionResult": value, "executionTimeInMilliseconds": int(outcome.ms or 0)}
    if is_image(value):  # never the same PNG twice in one answer
        del properties[{"result": "executionResult", "executionResult": "result"}[policy.v1_image_field]]
    return {"$id": "1", "properties": properties}


def raw_result(session: Session, outcome: Outcome) -> dict[str, Any]:
    """Seed 004's `rawResult`, as its polled example shows it: diagnostics and the error, with the
    streams and the value left empty (they are in `result`; an answer never carries them twice)."""
    failed = outcome.error_code is not None
    return {"hresult": 1 if failed else 0, "result": "" if outcome.done.is_set() else None,
            "error_name": outcome.error_code or "", "error_message": outcome.error_message or "",
            "error_stack_trace": "", "stdout": "", "stderr": "",
            "diagnosticInfo": {"executionRequestTimeInMilliSeconds": int(outcome.ms or 0),
                               "executionProcessResponseTimeInMilliSeconds": 0,
                               "executionDuration": int(outcome.ms or 0), "identifier": session.identifier or ""},
            "operationId": outcome.id}


def v2_execution(session: Session, outcome: Outcome, cap: int | None, mode: str,
                 policy: AnswerPolicy) -> dict[str, Any]:
    body: dict[str, Any] = {"id": outcome.id, "identifier": session.identifier, "sessionId": session.identifier,
                            "executionType": mode, "status": outcome.status}
    if outcome.done.is_set():  # a running execution has no result (seed 004's asynchronous answer)
        trim = trimmed_bytes if policy.cut_in_bytes else trimmed
        body["result"] = {"stdout": trim(outcome.stdout, cap), "stderr": trim(outcome.stderr, cap),
                          "executionResult": result_value(outcome, policy),
                          "executionTimeInMilliseconds": int(outcome.ms) if outcome.ms is not None else None}
        if policy.status_is_exit_code:  # the exit code, a string (spec examples; langchain's SessionsBashTool)
            del body["result"]["executionResult"]
            if outcome.error_code is None and isinstance(outcome.result, int):
                body["status"] = str(outcome.result)
    if outcome.error_code:  # an ErrorResponse, as the official documents give it
        body["error"] = {"error": {"code": outcome.error_code, "message": outcome.error_message or ""}}
    body["rawResult"] = raw_result(session, outcome)
    return body


def legacy_execution(outcome: Outcome, cap: int | None, policy: AnswerPolicy) -> dict[str, Any]:
    """The 2024 preview's answer: `status`, `stdout`, `stderr` and `result` at the top level."""
    properties: dict[str, Any] = v1_execution(outcome, cap, policy)["properties"]
    properties.pop("$id")
    properties.pop("executionResult", None)
    if outcome.error_code:
        properties["error"] = {"code": outcome.error_code, "message": outcome.error_message or ""}
    return properties


# files --------------------------------------------------------------------------------------------

def v1_entry(entry: files.Entry, n: int = 2) -> dict[str, Any]:
    return {"$id": str(n), "properties": {"$id": str(n + 1), "filename": entry.name, "size": entry.size,
                                          "lastModifiedTime": entry.modified_iso}}


def v2_entry(entry: files.Entry) -> dict[str, Any]:
    return {"name": entry.name, "type": "Directory" if entry.is_dir else "File", "sizeInBytes": entry.size,
            "lastModifiedAt": entry.modified_iso, "contentType": entry.content_type}


def v1_listing(entries: list[files.Entry]) -> dict[str, Any]:
    return {"$id": "1", "value": [v1_entry(e, 2 + 2 * i) for i, e in enumerate(entries)]}


def paged(next_link: str | None) -> dict[str, str]:
    return {"nextLink": next_link} if next_link else {}


@dataclass(frozen=True)
class FileAnswers:
    """How one wire shape answers the file routes."""

    uploaded: Callable[[list[files.Entry]], Response]
    listing: Callable[[list[files.Entry], str | None], Response]  # the entries, the next page's link
    metadata: Callable[[files.Entry], Response]
    deleted: Callable[[], Response]


FILE_ANSWERS = {
    "v1": FileAnswers(uploaded=lambda entries: JSONResponse(v1_listing(entries)),
                      listing=lambda entries, more: JSONResponse({**v1_listing(entries), **paged(more)}),
                      metadata=lambda entry: JSONResponse({"value": [v1_entry(entry)]}),
                      deleted=lambda: JSONResponse({"message": "file deleted successfully"})),
    "v2": FileAnswers(uploaded=lambda entries: JSONResponse(v2_entry(entries[0])),
                      listing=lambda entries, more: JSONResponse({"value": [v2_entry(e) for e in entries],
                                                                  **paged(more)}),
                      metadata=lambda entry: JSONResponse(v2_entry(entry)),
                      deleted=lambda: Response(status_code=204)),
}


def file_answers(request: Request, fixed: str | None = None) -> FileAnswers:
    """The answers of the wire shape to answer in: the route's own, else the api-version's (checked
    either way). Every file route existed in the 2024 preview, so no api-version means that one."""
    version = version_of(request, legacy=True)[1]
    return FILE_ANSWERS[fixed or version.shape]


# sessions -----------------------------------------------------------------------------------------

def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")


def session_view(session: Session, expires_field: str = "expireAt") -> dict[str, Any]:
    return {"identifier": session.identifier, "createdAt": iso(session.created_at),
            "lastAccessedAt": iso(session.last_accessed_at), expires_field: iso(session.expires_at),
            "etag": session.guid}


def with_next_link(body: dict[str, Any], next_link: str | None) -> dict[str, Any]:
    """The page, with `nextLink` only when there is a next page (a string in the official documents, never null)."""
    return {**body, "nextLink": next_link} if next_link else body
