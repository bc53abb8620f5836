"""The OpenAPI schema's hand-written parts: the error answers every operation documents, and the schema of
a run's ``sections``, which is the engine's own (``distill.config.config_schema``) in OpenAPI's dialect.
"""

from __future__ import annotations

from typing import Any

from distill.config import config_schema

ERROR_SCHEMA = {
    "type": "object",
    "description": 'An error: {"detail": "message"}, or for invalid input {"field": ["message", ...]} with '
    "the field's path (a config path such as student.layer_map[2] for the engine's checks).",
    "additionalProperties": {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "object"}]
    },
}
ERRORS = {
    "400": "Invalid input: the fields and their messages.",
    "401": "No or a wrong token (Authorization: Token <key>).",
    "403": "Not allowed: viewers cannot change anything in their team.",
    "404": "No such object, or one of another team.",
    "409": "Refused in the object's state: a run queued or running (cancel it first), or a teacher or data set "
    "that runs use (archived instead of deleted); the detail says which.",
    "413": "The request body is larger than the API takes (KDWEB_API_MAX_BODY_BYTES).",
}


def document_errors(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular post-processing hook: every operation documents the error answers it can give."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            codes = ["401", "403"]
            if method in ("post", "put", "patch") or any(p["in"] == "query" for p in operation.get("parameters", [])):
                codes.append("400")
            if method in ("post", "put", "patch"):
                codes.append("413")
            if "{" in path:
                codes.append("404")
            if method == "delete":
                codes.append("409")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(
                    code, {"description": ERRORS[code], "content": {"application/json": {"schema": ref}}}
                )
    return result


# the run config's fields that are no section of a request: set from the request's own fields
NOT_SECTIONS = ("kind", "name")
# sections whose required fields the registered teacher and data set give (their sources and columns)
GIVEN = ("teacher", "data")


def openapi(node: Any, defs: dict[str, Any]) -> Any:
    """A pydantic JSON schema node in OpenAPI 3.0's dialect: references inlined, ``null`` branches as
    ``nullable``, numeric ``exclusiveMinimum``/``exclusiveMaximum`` as the boolean flags beside the bound."""
    if isinstance(node, list):
        return [openapi(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return openapi({**defs[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    out = {k: openapi(v, defs) for k, v in node.items() if k not in ("$defs", "title")}
    branches = out.get("anyOf", [])
    if {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        out.pop("anyOf")
        out.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        out["nullable"] = True
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if not isinstance(out.get(exclusive, True), bool):
            out[bound], out[exclusive] = out[exclusive], True
    return out


def sections_schema() -> dict[str, Any]:
    """The schema of a request's ``sections``: the run config's, without the fields the request sets itself."""
    config = config_schema()
    properties = {k: openapi(v, config["$defs"]) for k, v in config["properties"].items() if k not in NOT_SECTIONS}
    for name in GIVEN:
        properties[name].pop("required", None)
    return {
        "type": "object",
        "properties": properties,
        "description": "The engine config without kind and name; the teacher's and the data's sources and columns "
        "come from the registered objects. task defaults to the teacher's; generation serves causal-LM teachers, "
        "lora teacher fine-tuning.",
        "example": {"student": {"layers": 2}, "optim": {"max_steps": 50}},
    }


SECTIONS_SCHEMA = sections_schema()
# the sections that are objects (or null where the config allows it), checked before the engine sees them
OBJECT_SECTIONS: dict[str, bool] = {
    name: bool(schema.get("nullable"))
    for name, schema in SECTIONS_SCHEMA["properties"].items()
    if schema.get("type") == "object"
}
