"""The OpenAPI 3.1 description served at /openapi.json, generated from the field and route tables in `schema`."""

from __future__ import annotations

from typing import Any

from .schema import ENDPOINTS, FILE_FIELDS, MAX_FPS, MAX_ITEMS, ROUTES, STATUSES, VIDEO_KEYS, Endpoint, Field, Route
from .settings import ServerSettings

IMAGE = {"type": "string", "description": "base64 image bytes (PNG, JPEG, WebP; a data: URL is allowed)"}
VISUAL = {"oneOf": [IMAGE, {"$ref": "#/components/schemas/Video"}]}
VIDEO = {
    "type": "object",
    "required": list(VIDEO_KEYS),
    "additionalProperties": False,
    "properties": {
        "frames": {"type": "array", "items": IMAGE, "minItems": 1, "maxItems": MAX_ITEMS},
        "fps": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_FPS,
            "description": "rate the frames were sampled at",
        },
    },
}
STRINGS = {"type": "array", "items": {"type": "string"}}
FEW_SHOT_EXAMPLE = {
    "type": "object",
    "required": ["image", "verdict"],
    "additionalProperties": False,
    "properties": {
        "image": VISUAL,
        "verdict": {"oneOf": [{"type": "boolean"}, {"enum": ["yes", "no"]}]},
        "prompt": {"type": "string", "minLength": 1},
        "reference": VISUAL,
    },
}
SHAPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "text": {"type": "string", "minLength": 1},
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "enum": {},
    "prompt": {"type": "string", "minLength": 1},
    "prompts": {"oneOf": [{"type": "string", "minLength": 1}, STRINGS]},
    "criteria": {"oneOf": [{"type": "string"}, STRINGS]},
    "visual": VISUAL,
    "visuals": {"type": "array", "items": VISUAL},
    "few_shot": {"type": "array", "items": FEW_SHOT_EXAMPLE},
}
USAGE = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in ("queries", "tokens", "queue_ms", "compute_ms", "batch_requests")},
}


def field_schema(field: Field) -> dict[str, Any]:
    """The JSON schema of one request field, from its declaration."""
    out = {**SHAPES[field.kind]}
    if field.enum:
        out["enum"] = list(field.enum)
    is_list = out.get("type") == "array"
    for key, value in (("minimum", field.minimum), ("maximum", field.maximum)):
        if value is not None:
            out[("minItems" if key == "minimum" else "maxItems") if is_list else key] = value
    if field.description:
        out["description"] = field.description
    return out


def request_schema(endpoint: Endpoint) -> dict[str, Any]:
    """The JSON body of a scoring endpoint."""
    return {
        "type": "object",
        "required": list(endpoint.required),
        "additionalProperties": False,
        "properties": {f.name: field_schema(f) for f in endpoint.fields},
    }


def responses(statuses: tuple[int, ...], ok: dict[str, Any]) -> dict[str, Any]:
    """The 200 answer and every error status a route returns."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {"200": ok, **{str(code): {"description": STATUSES[code], "content": error} for code in statuses}}


def scoring_operation(endpoint: Endpoint, statuses: tuple[int, ...]) -> dict[str, Any]:
    """The POST operation of a scoring endpoint."""
    request = f"{endpoint.name.capitalize()}Request"
    multipart = {
        "type": "object",
        "description": f"file parts {' / '.join(FILE_FIELDS)}; a `json` part with the other fields",
    }
    ok = {
        "description": "scores",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{endpoint.response}"}}},
    }
    return {
        "summary": endpoint.summary,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}},
                "multipart/form-data": {"schema": multipart},
            },
        },
        "responses": responses(statuses, ok),
    }


def route_operation(route: Route) -> dict[str, Any]:
    """The operation of one route."""
    if route.name in ENDPOINTS:
        return scoring_operation(ENDPOINTS[route.name], route.statuses)
    content = {"text/plain": {}} if route.name == "metrics" else {"application/json": {}}
    op: dict[str, Any] = {
        "summary": route.summary,
        "responses": responses(route.statuses, {"description": route.name, "content": content}),
    }
    if "{name}" in route.path:
        op["parameters"] = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if route.open:
        op["security"] = []
    return op


ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}
    },
}
NUMBERS = {"type": "array", "items": {"type": "number"}}
INTEGERS = {"type": "array", "items": {"type": "integer"}}
RESPONSE_SCHEMAS = {
    "ScoreResponse": {
        "type": "object",
        "properties": {
            "scores": {**NUMBERS, "description": "P(yes) per input, in input order"},
            "reasons": STRINGS,
            "spread": {
                **NUMBERS,
                "description": "with samples > 1: the standard deviation of each input's sampled judgements",
            },
            "model": {"type": "string"},
            "usage": USAGE,
        },
    },
    "RankResponse": {
        "type": "object",
        "properties": {
            "indices": INTEGERS,
            "scores": NUMBERS,
            "all_scores": NUMBERS,
            "model": {"type": "string"},
            "usage": USAGE,
        },
    },
    "TournamentResponse": {
        "type": "object",
        "properties": {
            "wins": INTEGERS,
            "mean_win_probability": NUMBERS,
            "ranking": INTEGERS,
            "matrix": {
                "type": "array",
                "items": NUMBERS,
                "description": "matrix[i][j] = P(candidate j beats reference i)",
            },
            "model": {"type": "string"},
            "usage": USAGE,
        },
    },
}


def openapi_spec(settings: ServerSettings, prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document for this server (paths under `prefix`), generated from `schema`'s tables."""
    from ... import __version__

    requests = {f"{name.capitalize()}Request": request_schema(e) for name, e in ENDPOINTS.items()}
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(prefix + route.path, {})[route.method.lower()] = route_operation(route)
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "RewardDance scoring backend",
            "version": __version__,
            "description": 'Generative VLM reward model: P("yes") scores for images and videos.',
        },
        "paths": paths,
        "components": {"schemas": {"Video": VIDEO, "Error": ERROR, **requests, **RESPONSE_SCHEMAS}},
    }
    if settings.token:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
    return spec
