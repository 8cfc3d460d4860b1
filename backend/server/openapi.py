"""The OpenAPI 3.1 description served at /openapi.json (kept next to the protocol it describes)."""

from __future__ import annotations

from typing import Any

from ..scoring.config import COT_MODES, NORMALIZATIONS
from .settings import ServerSettings

IMAGE = {"type": "string", "description": "base64 image bytes (PNG, JPEG, WebP; a data: URL is allowed)"}
VIDEO = {
    "type": "object",
    "required": ["frames", "fps"],
    "additionalProperties": False,
    "properties": {
        "frames": {"type": "array", "items": IMAGE, "minItems": 1},
        "fps": {"type": "number", "exclusiveMinimum": 0, "description": "rate the frames were sampled at"},
    },
}
VISUAL = {"oneOf": [IMAGE, {"$ref": "#/components/schemas/Video"}]}
VISUALS = {"type": "array", "items": VISUAL, "minItems": 1, "maxItems": 1024}
PROMPT = {
    "oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string"}}],
    "description": "the generation prompt, or one per image",
}
SCORING = {
    "model": {"type": "string", "description": "a configured model name (default: the server's default model)"},
    "criteria": {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "preset names (alignment, aesthetics, plausibility, text, overall, motion, temporal) "
        "or free-form criteria text",
    },
    "question": {"type": "string", "description": "custom question template with {prompt} / {criteria}"},
    "system": {"type": "string"},
    "normalize": {"enum": list(NORMALIZATIONS)},
    "answer": {"type": "string", "description": "the word whose probability is the score (default Yes)"},
    "negative": {"type": "string"},
    "answer_variants": {"type": "boolean"},
    "cot": {"enum": list(COT_MODES)},
    "reason_tokens": {"type": "integer", "minimum": 1, "maximum": 2048},
}
FEW_SHOT = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["image", "verdict"],
        "properties": {
            "image": VISUAL,
            "verdict": {"oneOf": [{"type": "boolean"}, {"enum": ["yes", "no"]}]},
            "prompt": {"type": "string"},
            "reference": VISUAL,
        },
    },
}
USAGE = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in ("queries", "tokens", "queue_ms", "compute_ms", "batch_requests")},
}


def _request(required: list[str], **props: Any) -> dict:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": {**SCORING, **props}}


def _op(summary: str, request: str, response: str) -> dict:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "description": "file parts images / candidates / reference; a `json` part with the other fields",
                        }
                    },
                },
            },
            "responses": {
                "200": {
                    "description": "scores",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}},
                },
                **ERRORS,
            },
        }
    }


ERRORS = {
    str(code): {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for code, text in (
        (400, "a malformed or invalid field (the message names it)"),
        (401, "missing or wrong bearer token"),
        (404, "unknown model"),
        (413, "body over the size limit"),
        (503, "queue full or model unloading (see Retry-After)"),
        (504, "request timed out"),
    )
}


def openapi_spec(settings: ServerSettings, prefix: str = "") -> dict[str, Any]:
    """The OpenAPI document for this server (paths under `prefix`)."""
    schemas = {
        "Video": VIDEO,
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}
            },
        },
        "ScoreRequest": _request(
            ["prompt", "images"], prompt=PROMPT, images=VISUALS, reasons={"type": "boolean"}, few_shot=FEW_SHOT
        ),
        "CompareRequest": _request(
            ["prompt", "candidates", "reference"],
            prompt=PROMPT,
            candidates=VISUALS,
            reference=VISUAL,
            reasons={"type": "boolean"},
            few_shot=FEW_SHOT,
        ),
        "RankRequest": _request(
            ["prompt", "images"],
            prompt=PROMPT,
            images=VISUALS,
            top_k={"type": "integer", "minimum": 1},
            few_shot=FEW_SHOT,
        ),
        "TournamentRequest": _request(
            ["prompt", "candidates"], prompt={"type": "string"}, candidates={**VISUALS, "minItems": 2}
        ),
        "ScoreResponse": {
            "type": "object",
            "properties": {
                "scores": {
                    "type": "array",
                    "items": {"type": "number"},
                    "description": "P(yes) per input, in input order",
                },
                "reasons": {"type": "array", "items": {"type": "string"}},
                "model": {"type": "string"},
                "usage": USAGE,
            },
        },
        "RankResponse": {
            "type": "object",
            "properties": {
                "indices": {"type": "array", "items": {"type": "integer"}},
                "scores": {"type": "array", "items": {"type": "number"}},
                "all_scores": {"type": "array", "items": {"type": "number"}},
                "model": {"type": "string"},
                "usage": USAGE,
            },
        },
        "TournamentResponse": {
            "type": "object",
            "properties": {
                "wins": {"type": "array", "items": {"type": "integer"}},
                "mean_win_probability": {"type": "array", "items": {"type": "number"}},
                "ranking": {"type": "array", "items": {"type": "integer"}},
                "matrix": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}},
                    "description": "matrix[i][j] = P(candidate j beats reference i)",
                },
                "model": {"type": "string"},
                "usage": USAGE,
            },
        },
    }
    simple = lambda summary: {"description": summary, "content": {"application/json": {}}}  # noqa: E731
    paths = {
        "/v1/score": _op("Pointwise P(yes) per image or video", "ScoreRequest", "ScoreResponse"),
        "/v1/compare": _op("Pairwise P(candidate beats the reference)", "CompareRequest", "ScoreResponse"),
        "/v1/rank": _op("Top-k by pointwise score", "RankRequest", "RankResponse"),
        "/v1/tournament": _op("Pairwise round robin: wins per candidate", "TournamentRequest", "TournamentResponse"),
        "/v1/models": {
            "get": {"summary": "Configured and loaded models, memory use", "responses": {"200": simple("models")}}
        },
        "/v1/models/{name}/load": {
            "post": {
                "summary": "Load a configured model",
                "parameters": [_name()],
                "responses": {"200": simple("loaded"), **ERRORS},
            }
        },
        "/v1/models/{name}/unload": {
            "post": {
                "summary": "Finish its queued requests and free a model",
                "parameters": [_name()],
                "responses": {"200": simple("unloaded"), **ERRORS},
            }
        },
        "/health": {"get": {"summary": "The process is up", "security": [], "responses": {"200": simple("ok")}}},
        "/ready": {
            "get": {
                "summary": "The default model is loaded",
                "security": [],
                "responses": {"200": simple("ready"), "503": simple("not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
            }
        },
    }
    from ... import __version__

    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "RewardDance scoring backend",
            "version": __version__,
            "description": 'Generative VLM reward model: P("yes") scores for images and videos.',
        },
        "paths": {prefix + p: v for p, v in paths.items()},
        "components": {"schemas": schemas},
    }
    if settings.token:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
    return spec


def _name() -> dict:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
