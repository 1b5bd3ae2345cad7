"""Checks of requests and answers against the service's official OpenAPI documents (Swagger 2.0).

The documents are the repository's copies (remote_kernel/pool/official). Schemas are validated with
jsonschema (Draft 4, the dialect Swagger 2.0 schemas are written in) against the document's own
definitions; what Swagger adds to JSON Schema is read as Azure's tools read it:

- an enum with `x-ms-enum.modelAsString: true` is extensible (any string; AutoRest's generated
  clients accept values they do not know), which is how the spec's own Shell example answers
  `"status": "0"`;
- `format` int32, int64, date-time and uri are checked (jsonschema leaves them to optional packages);
- a `type: file` answer is bytes: only its content type is checked.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import jsonschema

from remote_kernel.pool.official import OFFICIAL_API_VERSIONS, document

AZURE_PREFIX = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/sessionPools/[^/]+(?=/|$)", re.IGNORECASE)
FORMATS = jsonschema.FormatChecker(())


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2 ** 31) <= value < 2 ** 31


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2 ** 63) <= value < 2 ** 63


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time")
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    """An absolute URI (RFC 3986): a scheme and, for http(s), a host."""
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme)) and (
        parts.scheme not in ("http", "https") or bool(parts.netloc)) and not re.search(r"\s", value)


def _open_enums(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("x-ms-enum", {}).get("modelAsString") and "enum" in value:
            value = {k: v for k, v in value.items() if k != "enum"}
        return {k: _open_enums(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_open_enums(v) for v in value]
    return value


@cache
def official(api_version: str) -> dict[str, Any]:
    """The official document of `api_version`, its extensible enums opened (see the module's docstring)."""
    return _open_enums(copy.deepcopy(document(api_version)))


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {value["$ref"].rsplit("/", 1)[1]} if "$ref" in value else set().union(*map(_refs, value.values()))
    if isinstance(value, list):
        return set().union(*map(_refs, value))
    return set()


@cache
def for_generation(api_version: str) -> dict[str, Any]:
    """The official document with only the enums of answers opened: a generator (schemathesis) sends the
    documented values of a request's enums, and an answer may carry a value beyond them (a Shell `status`)."""
    root = copy.deepcopy(document(api_version))
    requested: set[str] = set()
    pending = {name for item in root["paths"].values() for spec in item.values() if isinstance(spec, dict)
               for p in spec.get("parameters", []) if p.get("in") == "body" for name in _refs(p)}
    while pending:
        name = pending.pop()
        requested.add(name)
        pending |= _refs(root["definitions"][name]) - requested
    for name, schema in root["definitions"].items():
        if name not in requested:
            root["definitions"][name] = _open_enums(schema)
    return root


@dataclass(frozen=True)
class Operation:
    api_version: str
    method: str
    path: str  # the document's path template
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec["operationId"])

    def parameters(self) -> list[dict[str, Any]]:
        root = official(self.api_version)
        return [root["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p for p in self.spec["parameters"]]


def operations(api_version: str) -> list[Operation]:
    root = official(api_version)
    return [Operation(api_version, method.upper(), path, spec) for path, item in root["paths"].items()
            for method, spec in item.items() if method != "parameters"]


def _template(path: str) -> re.Pattern[str]:
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{[^}]+\})", path)) + "$")


def _path_values(template: str, path: str) -> dict[str, str]:
    names = re.findall(r"\{([^}]+)\}", template)
    match = re.fullmatch(_template(template).pattern.rstrip("$").replace("[^/]+", "([^/]+)"), path)
    return dict(zip(names, match.groups(), strict=True)) if match else {}


def find_operation(api_version: str, method: str, path: str) -> Operation | None:
    """The operation a request's method and path (the Azure prefix taken off) are an instance of."""
    path = AZURE_PREFIX.sub("", path) or "/"
    candidates = [op for op in operations(api_version) if op.method == method.upper() and _template(op.path).match(path)]
    return max(candidates, key=lambda op: len(op.path), default=None)


def _schema_problems(api_version: str, schema: dict[str, Any], value: Any, where: str) -> list[str]:
    if schema.get("type") == "file":
        return []
    root = {**schema, "definitions": official(api_version)["definitions"]}
    validator = jsonschema.Draft4Validator(root, format_checker=FORMATS)
    return [f"{where}{'/' + '/'.join(map(str, e.absolute_path)) if e.absolute_path else ''}: {e.message}"
            for e in validator.iter_errors(value)]


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def response_problems(operation: Operation, response: httpx.Response) -> list[str]:
    """What in `response` the official document does not allow for `operation` (an empty list: it conforms).

    A request the document calls valid must succeed: the status must be one the operation lists
    (`default` is the document's error answer, not a success)."""
    status = str(response.status_code)
    answers = operation.spec["responses"]
    if status not in answers:
        return [f"status {status} is not one of {sorted(k for k in answers if k != 'default')} "
                f"({response.text[:200]!r})"]
    answer = answers[status]
    problems: list[str] = []
    for name, header in answer.get("headers", {}).items():
        value = response.headers.get(name)
        if value is not None:
            problems += _schema_problems(operation.api_version, header, value, f"header {name}")
    if operation.spec.get("x-ms-long-running-operation") and "Operation-Location" not in response.headers:
        problems.append("no Operation-Location header on a long-running operation's answer")
    if "schema" not in answer:
        if response.content:
            problems.append(f"a body ({len(response.content)} bytes) where the document has none")
        return problems
    produces = operation.spec.get("produces") or official(operation.api_version)["produces"]
    media = _media(response.headers.get("content-type", ""))
    if media not in produces:
        problems.append(f"content type {media!r} is not one of {produces}")
        return problems
    schema = answer["schema"]
    if schema.get("type") == "file":
        return problems
    if media == "application/json":
        try:
            body = response.json()
        except ValueError:
            return problems + [f"the body is not JSON: {response.text[:200]!r}"]
    else:
        body = response.text
    return problems + _schema_problems(operation.api_version, schema, body, "body")


def _parameter_value(parameter: dict[str, Any], text: str) -> Any:
    """A query, header or path value as its declared type (a problem raises ValueError)."""
    kind = parameter.get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", text):
            raise ValueError(f"{text!r} is not an integer")
        return int(text)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return text == "true"
    return text


def request_problems(request: httpx.Request, api_version: str | None = None) -> list[str]:
    """What in `request` the official document of its api-version does not allow (an empty list: valid)."""
    query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
    api_version = api_version or query.get("api-version")
    if api_version not in OFFICIAL_API_VERSIONS:
        return [f"api-version {api_version!r} has no official document"]
    operation = find_operation(api_version, request.method, unquote(request.url.path))
    if operation is None:
        return [f"{request.method} {request.url.path} is no operation of {api_version}"]
    problems: list[str] = []
    path_values = _path_values(operation.path, AZURE_PREFIX.sub("", request.url.path))
    known: set[str] = set()
    for parameter in operation.parameters():
        where, name = parameter["in"], parameter["name"]
        if where == "query":
            known.add(name)
            given = query.get(name)
        elif where == "header":
            given = request.headers.get(name)
        elif where == "path":
            given = unquote(path_values.get(name, ""))
        else:
            continue  # body and formData: below
        if given is None:
            if parameter.get("required"):
                problems.append(f"the required {where} parameter {name!r} is missing")
            continue
        try:
            value = _parameter_value(parameter, given)
        except ValueError as bad:
            problems.append(f"{where} parameter {name}: {bad}")
            continue
        schema = {k: v for k, v in parameter.items() if k in ("type", "pattern", "minLength", "maxLength", "enum",
                                                              "format", "minimum", "maximum")}
        problems += _schema_problems(api_version, schema, value, f"{where} parameter {name}")
    problems += [f"query parameter {name!r} is not in the document" for name in query if name not in known]
    body = next((p for p in operation.parameters() if p["in"] == "body"), None)
    form = [p for p in operation.parameters() if p["in"] == "formData"]
    media = _media(request.headers.get("content-type", ""))
    if body is not None:
        if media != "application/json":
            problems.append(f"content type {media!r} where the document has application/json")
        else:
            problems += _schema_problems(api_version, body["schema"], json.loads(request.content or b"null"), "body")
    elif form:
        if media != "multipart/form-data":
            problems.append(f"content type {media!r} where the document has multipart/form-data")
        else:
            content: bytes | None
            try:
                content = request.content
            except httpx.RequestNotRead:
                try:
                    content = request.read()  # a multipart body built from bytes can be read again
                except RuntimeError:
                    content = None  # a streamed body (the client's uploads): its parts are not checked here
            for parameter in form:
                if content is not None and f'name="{parameter["name"]}"'.encode() not in content \
                        and parameter.get("required"):
                    problems.append(f"the multipart body has no part {parameter['name']!r}")
    return problems
