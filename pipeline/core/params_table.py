"""The params table of the documents, generated from the schema (`aepipe docs`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.core.config import Params


def _allowed(spec: dict[str, Any]) -> str:
    if "allowed" in spec:
        return spec["allowed"]
    if "enum" in spec:
        return " \\| ".join(f"`{value}`" for value in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    bounds = []
    if "minimum" in spec:
        bounds.append(f"≥ {spec['minimum']}")
    if "exclusiveMinimum" in spec:
        bounds.append(f"> {spec['exclusiveMinimum']}")
    if "maximum" in spec:
        bounds.append(f"≤ {spec['maximum']}")
    return ", ".join(bounds) or "any"


def _rows(
    schema: dict[str, Any], defs: dict[str, Any], prefix: str, values: dict[str, Any]
) -> Iterator[str]:
    for name, spec in schema["properties"].items():
        if "$ref" in spec:
            section = defs[spec["$ref"].rsplit("/", 1)[-1]]
            yield from _rows(section, defs, f"{prefix}{name}.", values[name])
            continue
        kind = spec.get("type", "string" if "enum" in spec else "?")
        description = spec.get("description", "").replace("|", "\\|")
        yield f"| `{prefix}{name}` | {kind} | {_allowed(spec)} | `{values[name]}` | {description} |"


def params_table(current: Params) -> str:
    """Markdown: every key with its type, allowed values and value in `current`."""
    schema = Params.model_json_schema()
    header = ["| key | type | allowed | default | meaning |", "| --- | --- | --- | --- | --- |"]
    body = list(_rows(schema, schema.get("$defs", {}), "", current.model_dump()))
    return "\n".join(header + body) + "\n"
