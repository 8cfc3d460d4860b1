"""Malformed requests: each gets a 4xx JSON error naming the field, never a stack trace, and the server stays up."""

from __future__ import annotations

import base64

import pytest
from helpers import http, png_b64, random_image


# --- malformed requests ---------------------------------------------------------------------------------------------
def _big_png() -> str:
    return png_b64(random_image(700, 700, seed=1))


B64_TEXT = base64.b64encode(b"this is not an image").decode()
MALFORMED = [
    # (name, path, body (dict, bytes or callable(b64) -> dict), expected status, word the message must contain)
    ("invalid json", "/v1/score", b"{not json", 400, "JSON"),
    ("empty body", "/v1/score", b"", 400, "empty"),
    ("json array body", "/v1/score", b"[1, 2]", 400, "object"),
    ("unknown field", "/v1/score", lambda b: {"prompt": "x", "images": [b], "imgs": []}, 400, "imgs"),
    ("missing prompt", "/v1/score", lambda b: {"images": [b]}, 400, "prompt"),
    ("prompt number", "/v1/score", lambda b: {"prompt": 3, "images": [b]}, 400, "prompt"),
    ("prompt empty", "/v1/score", lambda b: {"prompt": "  ", "images": [b]}, 400, "prompt"),
    ("prompt list mismatch", "/v1/score", lambda b: {"prompt": ["a", "b"], "images": [b]}, 400, "prompt"),
    ("missing images", "/v1/score", {"prompt": "x"}, 400, "images"),
    ("images not a list", "/v1/score", lambda b: {"prompt": "x", "images": b}, 400, "images"),
    ("images empty", "/v1/score", {"prompt": "x", "images": []}, 400, "images"),
    ("image item a number", "/v1/score", {"prompt": "x", "images": [5]}, 400, "images[0]"),
    ("bad base64", "/v1/score", {"prompt": "x", "images": ["@@not base64@@"]}, 400, "base64"),
    ("not an image", "/v1/score", {"prompt": "x", "images": [B64_TEXT]}, 400, "images[0]"),
    ("data url of text", "/v1/score", {"prompt": "x", "images": ["data:text/plain;base64," + B64_TEXT]}, 400, "image/"),
    ("empty base64", "/v1/score", {"prompt": "x", "images": [""]}, 400, "empty"),
    ("video without fps", "/v1/score", lambda b: {"prompt": "x", "images": [{"frames": [b]}]}, 400, "fps"),
    ("video bad fps", "/v1/score", lambda b: {"prompt": "x", "images": [{"frames": [b], "fps": -2}]}, 400, "fps"),
    ("video no frames", "/v1/score", {"prompt": "x", "images": [{"frames": [], "fps": 4}]}, 400, "frames"),
    (
        "video mixed sizes",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [{"frames": [b, png_b64(random_image(30, 20))], "fps": 4}]},
        400,
        "same size",
    ),
    ("unknown model", "/v1/score", lambda b: {"model": "nope", "prompt": "x", "images": [b]}, 404, "nope"),
    ("path-like model", "/v1/score", lambda b: {"model": "/etc/passwd", "prompt": "x", "images": [b]}, 400, "path"),
    ("dotdot model", "/v1/score", lambda b: {"model": "..", "prompt": "x", "images": [b]}, 400, "path"),
    ("model not a string", "/v1/score", lambda b: {"model": ["qwen"], "prompt": "x", "images": [b]}, 400, "model"),
    ("bad normalize", "/v1/score", lambda b: {"prompt": "x", "images": [b], "normalize": "softmax"}, 400, "normalize"),
    ("bad cot", "/v1/score", lambda b: {"prompt": "x", "images": [b], "cot": "always"}, 400, "cot"),
    ("empty answer", "/v1/score", lambda b: {"prompt": "x", "images": [b], "answer": ""}, 400, "answer"),
    ("answer words clash", "/v1/score", lambda b: {"prompt": "x", "images": [b], "answer": "No"}, 400, "share"),
    ("reasons not bool", "/v1/score", lambda b: {"prompt": "x", "images": [b], "reasons": "maybe"}, 400, "reasons"),
    ("criteria wrong type", "/v1/score", lambda b: {"prompt": "x", "images": [b], "criteria": 5}, 400, "criteria"),
    (
        "reason_tokens too big",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "reason_tokens": 10**6},
        400,
        "reason_tokens",
    ),
    (
        "question template bad field",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "question": "{nope}"},
        400,
        "nope",
    ),
    (
        "few_shot bad verdict",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "few_shot": [{"image": b, "verdict": 2}]},
        400,
        "verdict",
    ),
    ("top_k zero", "/v1/rank", lambda b: {"prompt": "x", "images": [b], "top_k": 0}, 400, "top_k"),
    ("top_k string", "/v1/rank", lambda b: {"prompt": "x", "images": [b], "top_k": "2"}, 400, "top_k"),
    ("compare without reference", "/v1/compare", lambda b: {"prompt": "x", "candidates": [b]}, 400, "reference"),
    (
        "compare two references",
        "/v1/compare",
        lambda b: {"prompt": "x", "candidates": [b], "reference": [b, b]},
        400,
        "reference",
    ),
    (
        "compare image vs video",
        "/v1/compare",
        lambda b: {"prompt": "x", "candidates": [{"frames": [b], "fps": 2}], "reference": b},
        400,
        "video",
    ),
    ("tournament one candidate", "/v1/tournament", lambda b: {"prompt": "x", "candidates": [b]}, 400, "at least 2"),
    ("tournament prompt list", "/v1/tournament", lambda b: {"prompt": ["x", "y"], "candidates": [b, b]}, 400, "prompt"),
    ("oversized body", "/v1/score", lambda b: {"prompt": "x", "images": [_big_png()] * 2}, 413, "limit"),
    ("unknown route", "/v1/scores", {"prompt": "x"}, 404, "openapi"),
    ("deeply nested json", "/v1/score", b"[" * 100000, 400, "deeply"),
    ("tournament too large", "/v1/tournament", lambda b: {"prompt": "x", "candidates": [b] * 65}, 400, "at most 64"),
    (
        "too many few-shot examples",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "few_shot": [{"image": b, "verdict": True}] * 33},
        400,
        "at most 32",
    ),
    ("load unknown model", "/v1/models/ghost/load", b"", 404, "ghost"),
    ("samples zero", "/v1/score", lambda b: {"prompt": "x", "images": [b], "samples": 0}, 400, "samples"),
    ("samples a string", "/v1/score", lambda b: {"prompt": "x", "images": [b], "samples": "4"}, 400, "samples"),
    (
        "samples without reasoning first",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "samples": 4, "temperature": 0.7},
        400,
        "reasoning_first",
    ),
    (
        "samples at temperature 0",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "samples": 4, "cot": "reasoning_first"},
        400,
        "temperature",
    ),
    (
        "temperature negative",
        "/v1/score",
        lambda b: {"prompt": "x", "images": [b], "temperature": -1},
        400,
        "temperature",
    ),
    ("top_p zero", "/v1/score", lambda b: {"prompt": "x", "images": [b], "top_p": 0}, 400, "top_p"),
    ("top_p a string", "/v1/score", lambda b: {"prompt": "x", "images": [b], "top_p": "high"}, 400, "top_p"),
    ("seed negative", "/v1/score", lambda b: {"prompt": "x", "images": [b], "seed": -3}, 400, "seed"),
]


@pytest.mark.parametrize("name,path,body,status,word", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_4xx_with_message(served, b64_image, name, path, body, status, word):
    payload = body(b64_image) if callable(body) else body
    got, answer, _ = http("POST", served.url + path, payload)
    assert got == status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"type", "message"}
    assert word.lower() in answer["error"]["message"].lower(), answer
    assert "Traceback" not in answer["error"]["message"]


def test_server_healthy_after_malformed_requests(served, b64_image):
    assert len(MALFORMED) >= 30
    for _, path, body, _, _ in MALFORMED[:12]:
        http("POST", served.url + path, body(b64_image) if callable(body) else body)
    assert http("GET", served.url + "/health")[0] == 200
    status, answer, _ = http("POST", served.url + "/v1/score", {"prompt": "x", "images": [b64_image]})
    assert status == 200 and len(answer["scores"]) == 1
    status, answer, headers = http("GET", served.url + "/v1/score")
    assert status == 405 and answer["error"]["type"] == "method_not_allowed"
