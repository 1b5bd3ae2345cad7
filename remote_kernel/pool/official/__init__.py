"""The service's official OpenAPI documents (Swagger 2.0, one per api-version; README.md has their source).

The pool's /openapi.json takes its answer schemas from them (`components`), so that the answers it
describes are the ones the service documents; the contract tests validate against them.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
#: the api-versions with an official document, oldest first
OFFICIAL_API_VERSIONS = ("2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview")


@cache
def document(api_version: str) -> dict[str, Any]:
    """The official document of `api_version` (KeyError for a version that has none)."""
    if api_version not in OFFICIAL_API_VERSIONS:
        raise KeyError(f"no official document for api-version {api_version!r}; there is one for "
                       f"{', '.join(OFFICIAL_API_VERSIONS)}")
    document: dict[str, Any] = json.loads((FOLDER / f"{api_version}.json").read_text(encoding="utf-8"))
    return document


def _openapi3(value: Any) -> Any:
    """A Swagger 2.0 schema as an OpenAPI 3.0 one: references point into components, and an enum Azure's
    tools read as extensible (`x-ms-enum.modelAsString`) is a string with its known values in
    `x-extensible-enum` (the spec's own Shell example answers `"status": "0"`)."""
    if isinstance(value, list):
        return [_openapi3(item) for item in value]
    if not isinstance(value, dict):
        return value
    converted: dict[str, Any] = {}
    for key, item in value.items():
        if key == "$ref":
            converted[key] = item.replace("#/definitions/", "#/components/schemas/")
        elif key == "enum" and value.get("x-ms-enum", {}).get("modelAsString"):
            converted["x-extensible-enum"] = item
        elif not key.startswith("x-ms-"):
            converted[key] = _openapi3(item)
    return converted


def component_schemas(api_version: str = OFFICIAL_API_VERSIONS[-1]) -> dict[str, dict[str, Any]]:
    """The document's definitions as OpenAPI 3.0 `components.schemas` (names kept)."""
    return {name: _openapi3(schema) for name, schema in document(api_version)["definitions"].items()}


def identifier_pattern(api_version: str = OFFICIAL_API_VERSIONS[-1]) -> str:
    """The pattern the document gives the `identifier` query parameter."""
    return str(document(api_version)["parameters"]["SessionIdentifier"]["pattern"])
