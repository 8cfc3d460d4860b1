"""The request parser and /openapi.json agree: same fields, same limits and choices, every status documented."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import png_b64, random_image

from rewarddance.backend.server import protocol
from rewarddance.backend.server.decoding import VisualDecoder
from rewarddance.backend.server.errors import ApiError
from rewarddance.backend.server.openapi import openapi_spec
from rewarddance.backend.server.protocol import parse_request
from rewarddance.backend.server.settings import ServerSettings

SERVER_DIR = Path(protocol.__file__).parent
IMAGE = png_b64(random_image(8, 8, seed=3))
SPEC = openapi_spec(ServerSettings())
VISUAL_FIELD = {"score": "images", "rank": "images", "compare": "candidates", "tournament": "candidates"}


def base_body(endpoint: str) -> dict:
    """The smallest valid body for `endpoint`."""
    body = {"prompt": "a cat", VISUAL_FIELD[endpoint]: [IMAGE, IMAGE]}
    if endpoint == "compare":
        body["reference"] = IMAGE
    return body


def parse(endpoint: str, body: dict):
    """Parse a body with a fresh decoder (no pixel budget to speak of)."""
    return parse_request(endpoint, body, VisualDecoder(10**6, max_request_pixels=10**9))


def rejected(endpoint: str, body: dict) -> ApiError | None:
    """The parser's error for a body, None when it accepts it."""
    try:
        parse(endpoint, body)
    except ApiError as exc:
        return exc
    return None


def request_schema(endpoint: str) -> dict:
    """The published JSON body schema of a scoring endpoint."""
    return SPEC["components"]["schemas"][f"{endpoint.capitalize()}Request"]


def parser_fields(endpoint: str) -> set[str]:
    """The field names the parser accepts, read from its own unknown-field answer."""
    err = rejected(endpoint, {**base_body(endpoint), "no_such_field": 1})
    assert err is not None and err.type == "unknown_field"
    return set(err.message.split("known: ")[1].split(", "))


ENDPOINTS = list(VISUAL_FIELD)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_spec_lists_exactly_the_fields_the_parser_accepts(endpoint):
    published = set(request_schema(endpoint)["properties"])
    assert published == parser_fields(endpoint)
    assert rejected(endpoint, base_body(endpoint)) is None
    for name in published:  # none of them is unknown to the parser
        err = rejected(endpoint, {**base_body(endpoint), name: None})
        assert err is None or err.type != "unknown_field", (name, err.message)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_required_fields_agree(endpoint):
    schema = request_schema(endpoint)
    for name in schema["properties"]:
        body = {k: v for k, v in base_body(endpoint).items() if k != name}
        err = rejected(endpoint, body)
        assert (err is not None and err.type == "missing_field") == (name in schema["required"]), name


def bound_probes(prop: dict) -> list[tuple[object, bool]]:
    """(value, whether the parser must accept it) pairs at and beyond every published bound of a field."""
    probes: list[tuple[object, bool]] = []
    if "minimum" in prop:
        probes += [(prop["minimum"], True), (prop["minimum"] - 1, False)]
    if "maximum" in prop:
        probes += [(prop["maximum"], True), (prop["maximum"] + 1, False)]
    if "enum" in prop:
        probes += [(value, True) for value in prop["enum"]] + [("not-a-choice", False)]
    if "minItems" in prop:
        probes.append(([IMAGE] * (prop["minItems"] - 1), False))
        probes.append(([IMAGE] * prop["minItems"], True))
    if "maxItems" in prop:
        probes.append(([IMAGE] * prop["maxItems"], True))
        probes.append(([IMAGE] * (prop["maxItems"] + 1), False))
    return probes


def few_shot_items(n: int, pairwise: bool) -> list[dict]:
    example = {"image": IMAGE, "verdict": True, **({"reference": IMAGE} if pairwise else {})}
    return [example] * n


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_published_limits_and_choices_are_the_parsers(endpoint):
    """At every published bound the parser accepts; one past it the parser refuses, naming the field."""
    checked = 0
    for name, prop in request_schema(endpoint)["properties"].items():
        for value, ok in bound_probes(prop):
            if name == "few_shot":
                value = few_shot_items(len(value), endpoint == "compare")
            err = rejected(endpoint, {**base_body(endpoint), name: value})
            if ok:
                assert err is None, (name, value if not isinstance(value, list) else len(value), err.message)
            else:
                assert err is not None and err.status == 400 and name in err.message, (name, value)
            checked += 1
    assert checked >= 10


def test_limits_come_from_one_table():
    """The numbers in the document are the parser's constants, and the enumerations are the engine's."""
    from rewarddance.backend.scoring.config import COT_MODES, NORMALIZATIONS
    from rewarddance.backend.server import schema

    score = request_schema("score")["properties"]
    assert score["images"]["maxItems"] == schema.MAX_ITEMS == 1024
    assert score["few_shot"]["maxItems"] == schema.MAX_FEW_SHOT == 32
    assert score["reason_tokens"]["maximum"] == schema.MAX_REASON_TOKENS == 2048
    assert request_schema("tournament")["properties"]["candidates"]["maxItems"] == schema.MAX_TOURNAMENT == 64
    assert score["normalize"]["enum"] == list(NORMALIZATIONS) and score["cot"]["enum"] == list(COT_MODES)
    assert schema.FILE_FIELDS == ("images", "candidates", "reference")


def test_video_bounds_are_the_parsers():
    video = SPEC["components"]["schemas"]["Video"]
    assert set(video["properties"]) == set(video["required"]) == {"frames", "fps"}
    top = video["properties"]["fps"]["maximum"]
    for fps, ok in ((top, True), (top + 1, False), (video["properties"]["fps"]["exclusiveMinimum"], False)):
        err = rejected("score", {"prompt": "x", "images": [{"frames": [IMAGE], "fps": fps}]})
        assert (err is None) == ok, fps
    most = video["properties"]["frames"]["maxItems"]
    assert rejected("score", {"prompt": "x", "images": [{"frames": [IMAGE] * most, "fps": 4}]}) is None
    err = rejected("score", {"prompt": "x", "images": [{"frames": [IMAGE] * (most + 1), "fps": 4}]})
    assert err is not None and "frames" in err.message


def raised_statuses() -> dict[int, list[str]]:
    """Every HTTP status the server code can answer with: ApiError(<status>, ...) and bad_request (400) calls."""
    found: dict[int, list[str]] = {}
    for path in sorted(SERVER_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id == "bad_request":
                found.setdefault(400, []).append(path.name)
            elif node.func.id == "ApiError" and node.args and isinstance(node.args[0], ast.Constant):
                found.setdefault(node.args[0].value, []).append(path.name)
    return found


def documented_statuses() -> dict[str, set[int]]:
    """Error statuses per documented route."""
    return {
        f"{method.upper()} {path}": {int(code) for code in op["responses"] if code != "200"}
        for path, ops in SPEC["paths"].items()
        for method, op in ops.items()
    }


def test_every_status_the_server_raises_is_documented_and_every_documented_one_is_raised():
    raised = raised_statuses()
    assert {409, 422, 507} <= set(raised)  # the ones the hand-written document used to miss
    documented = set().union(*documented_statuses().values())
    assert documented == set(raised), (sorted(documented), sorted(raised))
    for ops in SPEC["paths"].values():
        for op in ops.values():
            assert all(answer["description"].strip() for answer in op["responses"].values())


def test_each_route_documents_its_own_failures():
    routes = documented_statuses()
    for endpoint in ENDPOINTS:
        assert {400, 404, 413, 422, 500, 503, 504, 507} <= routes[f"POST /v1/{endpoint}"]
    assert 409 in routes["POST /v1/models/{name}/unload"] and 409 not in routes["POST /v1/score"]
    assert 507 in routes["POST /v1/models/{name}/load"]
    assert routes["GET /ready"] == {403, 503} and routes["GET /health"] == {403}  # 403: another origin or Host


def test_the_app_serves_exactly_the_documented_routes():
    from rewarddance.backend.server.app import ScoringService

    served = {(d.method, d.path) for d in ScoringService(ServerSettings()).route_defs("/rd")}
    documented = {(m.upper(), p) for p, ops in openapi_spec(ServerSettings(), "/rd")["paths"].items() for m in ops}
    assert served == documented and ("POST", "/rd/v1/models/{name}/unload") in served
