"""OpenAPI for routes that parse their own bodies (JSON or multipart): the schema is
the same pydantic model FastAPI would have used, so /docs and clients generated from
/openapi.json see the real fields and limits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_REF = "#/components/schemas/{model}"


def request_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    defs = schema.pop("$defs", {})
    form = {
        "type": "object",
        "properties": {
            **schema.get("properties", {}),
            "image": {"type": "string", "format": "binary"},
            "mask": {"type": "string", "format": "binary"},
        },
        "required": schema.get("required", []),
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": form},
            },
        },
        "x-sdserve-schemas": defs,
    }


def hoist_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """Move each route's ``x-sdserve-schemas`` into ``components.schemas``."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for path in spec.get("paths", {}).values():
        for op in path.values():
            if isinstance(op, dict):
                components.update(op.pop("x-sdserve-schemas", {}))
    return spec
