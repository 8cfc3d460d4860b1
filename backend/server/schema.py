"""The HTTP schema, declared once: every request field (type, limits, enum), every route and the statuses it returns.

`protocol` validates request bodies from these tables and `openapi` generates /openapi.json from them, so the
parser and the published document cannot disagree. Enumerations come from `backend.scoring.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ranking import MIN_TOURNAMENT
from ..scoring.config import COT_MODES, MAX_SAMPLES, MAX_TEMPERATURE, NORMALIZATIONS
from ..scoring.criteria import CRITERIA_PRESETS
from ..scoring.judges import JUDGES

MAX_ITEMS = 1024  # images (or pairs) per request, frames per video
MAX_TOURNAMENT = 64  # candidates: a round robin costs N x (N - 1) comparisons
MAX_FEW_SHOT = 32  # in-context examples per request
MAX_REASON_TOKENS = 2048
MAX_FPS = 1000
FEW_SHOT_KEYS = ("image", "verdict", "prompt", "reference")  # the fields of one in-context example
VIDEO_KEYS = ("frames", "fps")


@dataclass(frozen=True)
class Field:
    """One request field: its JSON shape (`kind`), its bounds or choices, and what it means.

    kinds: "string" (any string), "text" (a non-empty string), "boolean", "integer", "number", "enum", "prompt"
    (one string), "prompts" (one string or one per image), "criteria", "visual", "visuals", "few_shot".
    `minimum` / `maximum` bound an integer's or a number's value, or a list's number of items.
    """

    name: str
    kind: str
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] = ()


MODEL = Field("model", "string", "a configured model name (default: the server's default model)")
PROMPTS = Field("prompt", "prompts", "the generation prompt, or one per image")
PROMPT = Field("prompt", "prompt", "the generation prompt")
IMAGES = Field("images", "visuals", "the images or videos to score", minimum=1, maximum=MAX_ITEMS)
CANDIDATES = Field("candidates", "visuals", "the candidates compared to the reference", minimum=1, maximum=MAX_ITEMS)
ENTRANTS = Field(
    "candidates", "visuals", "the candidates of the round robin", minimum=MIN_TOURNAMENT, maximum=MAX_TOURNAMENT
)
REFERENCE = Field("reference", "visual", "the image every candidate is compared to")
REASONS = Field("reasons", "boolean", "also return the model's explanation per input")
TOP_K = Field("top_k", "integer", "how many of the best to return (default: all)", minimum=1)
FEW_SHOT = Field("few_shot", "few_shot", "in-context examples with their verdicts", maximum=MAX_FEW_SHOT)

# The ScoringConfig fields every scoring endpoint accepts, in the order the parser checks them.
SCORING_FIELDS = (
    Field("question", "text", "custom question template with {prompt} / {criteria}"),
    Field("system", "string", "the system prompt"),
    Field("answer", "text", "the word whose probability is the score (default Yes)"),
    Field("negative", "text", "the opposing word (for normalize = yes_no)"),
    Field("normalize", "enum", "how the answer probability becomes the score", enum=tuple(NORMALIZATIONS)),
    Field("cot", "enum", "chain-of-thought mode", enum=tuple(COT_MODES)),
    Field("judge", "enum", "judge preset: the prompts and answer reading of the checkpoint", enum=tuple(JUDGES)),
    Field("answer_variants", "boolean", "also count case and spacing variants of the answer word"),
    Field("reason_tokens", "integer", "tokens a reason may take", minimum=1, maximum=MAX_REASON_TOKENS),
    Field(
        "samples",
        "integer",
        "reasoning-first judgements per image (needs cot reasoning_first and temperature > 0); the score is their "
        "mean P(yes), the response's spread their standard deviation",
        minimum=1,
        maximum=MAX_SAMPLES,
    ),
    Field(
        "temperature",
        "number",
        "sampling temperature of generated text (0: greedy)",
        minimum=0,
        maximum=MAX_TEMPERATURE,
    ),
    Field("top_p", "number", "nucleus sampling mass (with temperature > 0)", minimum=0, maximum=1),
    Field("seed", "integer", "sampling seed: the same seed gives the same texts and scores", minimum=0),
    Field(
        "criteria",
        "criteria",
        f"preset names ({', '.join(CRITERIA_PRESETS)}) or free-form criteria text",
    ),
)


@dataclass(frozen=True)
class Endpoint:
    """A scoring endpoint: its fields, which are required, and the response schema's name."""

    name: str
    summary: str
    fields: tuple[Field, ...]
    required: tuple[str, ...]
    response: str

    def field(self, name: str) -> Field:
        """The declaration of one of this endpoint's fields."""
        return next(f for f in self.fields if f.name == name)

    @property
    def names(self) -> set[str]:
        """Every field name this endpoint accepts."""
        return {f.name for f in self.fields}


ENDPOINTS = {
    e.name: e
    for e in (
        Endpoint(
            "score",
            "Pointwise P(yes) per image or video",
            (MODEL, PROMPTS, IMAGES, REASONS, FEW_SHOT, *SCORING_FIELDS),
            ("prompt", "images"),
            "ScoreResponse",
        ),
        Endpoint(
            "compare",
            "Pairwise P(candidate beats the reference)",
            (MODEL, PROMPTS, CANDIDATES, REFERENCE, REASONS, FEW_SHOT, *SCORING_FIELDS),
            ("prompt", "candidates", "reference"),
            "ScoreResponse",
        ),
        Endpoint(
            "rank",
            "Top-k by pointwise score",
            (MODEL, PROMPTS, IMAGES, TOP_K, FEW_SHOT, *SCORING_FIELDS),
            ("prompt", "images"),
            "RankResponse",
        ),
        Endpoint(
            "tournament",
            "Pairwise round robin: wins per candidate",
            (MODEL, PROMPT, ENTRANTS, *SCORING_FIELDS),
            ("prompt", "candidates"),
            "TournamentResponse",
        ),
    )
}
FILE_FIELDS = tuple(dict.fromkeys(f.name for e in ENDPOINTS.values() for f in e.fields if "visual" in f.kind))

# Every error status the server answers with, and when.
STATUSES = {
    400: "a malformed or invalid field (the message names it)",
    401: "missing or wrong bearer token",
    403: "a cross-origin browser request or a Host name the server does not answer to (see --allow-origin, "
    "--allow-host); mounted on a host listening beyond loopback, a heavy route while no token is configured",
    404: "unknown model",
    408: "the request body did not arrive within body_timeout_s",
    409: "the model is owned by its host application (e.g. ComfyUI); unload it there",
    413: "body over the size limit, images that decode to too many pixels, or text over its limit (prompt, criteria, "
    "question, a query over max_query_tokens)",
    415: "a POST body that is not application/json or multipart/form-data",
    422: "the model cannot score an input (the message names it)",
    500: "a model failed to load or to score, or an internal error",
    503: "not ready, queue full, model unloading, server stopping, decoded pixels in flight over max_inflight_pixels "
    "or out of memory while decoding (see Retry-After)",
    504: "request timed out",
    507: "the model does not fit the memory budget; unload or unpin a model",
}
SCORING_STATUSES = (400, 401, 403, 404, 408, 413, 415, 422, 500, 503, 504, 507)


@dataclass(frozen=True)
class Route:
    """One route: method, path (under the mount prefix), handler name, summary and its error statuses."""

    method: str
    path: str
    name: str
    summary: str
    statuses: tuple[int, ...]
    open: bool = False  # served without the bearer token


ROUTES = (
    *(Route("POST", f"/v1/{e.name}", e.name, e.summary, SCORING_STATUSES) for e in ENDPOINTS.values()),
    Route("GET", "/v1/models", "models", "Configured and loaded models, memory use", (401, 403, 500)),
    Route("POST", "/v1/models/{name}/load", "load", "Load a configured model", (400, 401, 403, 404, 415, 500, 507)),
    Route(
        "POST",
        "/v1/models/{name}/unload",
        "unload",
        "Finish its queued requests and free a model",
        (400, 401, 403, 404, 409, 415, 500),
    ),
    Route("GET", "/health", "health", "The process is up", (403,), open=True),
    Route("GET", "/ready", "ready", "The default model is loaded", (403, 503), open=True),
    Route("GET", "/metrics", "metrics", "Prometheus metrics", (401, 403)),
    Route("GET", "/openapi.json", "openapi", "This document", (401, 403)),
)
OPEN_ROUTES = tuple(r.name for r in ROUTES if r.open)
