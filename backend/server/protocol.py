"""Request fields -> engine inputs. Every malformed field gets one `ApiError` that names it and the fix.

Which fields each endpoint takes, and their limits and choices, are declared in `schema` (which /openapi.json
is generated from); the checks here read them from there. The body is read by `body.py`, its visuals decoded by
`decoding.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..media import Image, Video
from ..scoring.config import ScoringConfig, normalize_criteria
from ..scoring.prompts import FewShotExample
from .decoding import VisualDecoder
from .errors import bad_request, json_type
from .schema import (
    ENDPOINTS,
    ENTRANTS,
    FEW_SHOT,
    FEW_SHOT_KEYS,
    SCORING_FIELDS,
    Field,
)

ENDPOINT_FIELDS: dict[str, set[str]] = {name: e.names for name, e in ENDPOINTS.items()}


# --- fields -------------------------------------------------------------------------------------------------------
@dataclass
class ScoringRequest:
    """A validated request: model name, visuals, prompt(s), per-request config and options."""

    endpoint: str
    model: str | None
    prompt: str | list[str]
    overrides: dict[str, Any]
    images: list[Any] | None = None
    reference: Any = None
    reasons: bool = False
    top_k: int | None = None
    few_shot: list[FewShotExample] | None = None

    def config(self, base: ScoringConfig) -> ScoringConfig:
        """The model's config with this request's overrides."""
        try:
            return base.with_overrides(**self.overrides)
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc), "invalid_option") from exc


def parse_request(endpoint: str, data: dict[str, Any], decoder: VisualDecoder) -> ScoringRequest:
    """Validate a scoring body for `endpoint` (score, compare, rank, tournament)."""
    decoder.start_request()
    spec = ENDPOINTS[endpoint]
    allowed = ENDPOINT_FIELDS[endpoint]
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise bad_request(
            f"unknown field(s) {', '.join(map(repr, unknown))} for /v1/{endpoint}; known: {', '.join(sorted(allowed))}",
            "unknown_field",
        )
    req = ScoringRequest(endpoint, data.get("model"), "", scoring_overrides(data))
    if "model" in data and not isinstance(data["model"], str):
        raise bad_request(f"model: expected a configured model name (string), got {json_type(data['model'])}")
    req.images = parse_visuals(data, spec.field("images" if endpoint in ("score", "rank") else "candidates"), decoder)
    req.prompt = parse_prompt(data, len(req.images), allow_list=spec.field("prompt").kind == "prompts")
    if "reference" in allowed:
        req.reference = parse_reference(data, decoder)
    if "reasons" in data:
        req.reasons = parse_bool(data["reasons"], "reasons")
    if "top_k" in data and data["top_k"] is not None:
        req.top_k = min(check_value(spec.field("top_k"), data["top_k"]), len(req.images))
    if "few_shot" in data:
        req.few_shot = parse_few_shot(data["few_shot"], decoder, pairwise=endpoint == "compare")
    return req


def parse_visuals(data: dict[str, Any], field: Field, decoder: VisualDecoder) -> list[Image | Video]:
    """The images or candidates of a request, within the field's item bounds (a tournament's are tighter)."""
    name = field.name
    if name not in data:
        raise bad_request(f"{name}: required; send a list of base64 images", "missing_field")
    items = data[name]
    if field is ENTRANTS and isinstance(items, list) and len(items) > field.maximum:
        raise bad_request(
            f"{name}: a tournament takes at most {field.maximum} candidates (N x (N - 1) "
            f"comparisons), got {len(items)}; rank by /v1/score first"
        )
    visuals = decoder.visuals(items, name, field.maximum)
    if len(visuals) < field.minimum:
        raise bad_request(f"{name}: a tournament needs at least {field.minimum} candidates, got {len(visuals)}")
    return visuals


def parse_reference(data: dict[str, Any], decoder: VisualDecoder) -> Image | Video:
    """The one reference image of /v1/compare."""
    if "reference" not in data:
        raise bad_request(
            "reference: required; send one base64 image (the image every candidate is compared to)", "missing_field"
        )
    if isinstance(data["reference"], list):
        raise bad_request(
            f"reference: expected one image, got a list of {len(data['reference'])}; "
            "compare against one reference per request"
        )
    return decoder.visual(data["reference"], "reference")


def parse_prompt(data: dict[str, Any], n: int, allow_list: bool) -> str | list[str]:
    """One non-empty prompt string, or (where allowed) one per image."""
    if "prompt" not in data:
        raise bad_request(
            'prompt: required; the text the images were generated from, e.g. "a red fox"', "missing_field"
        )
    prompt = data["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise bad_request("prompt: must not be empty")
        return prompt
    if allow_list and isinstance(prompt, list):
        if len(prompt) != n:
            raise bad_request(f"prompt: got {len(prompt)} prompts for {n} images; send one prompt or one per image")
        if not all(isinstance(p, str) and p.strip() for p in prompt):
            raise bad_request("prompt: every prompt in the list must be a non-empty string")
        return prompt
    expected = "a string or a list of strings (one per image)" if allow_list else "a string"
    raise bad_request(f"prompt: expected {expected}, got {json_type(prompt)}")


def parse_bool(value: Any, name: str) -> bool:
    """A JSON boolean (multipart text 'true'/'false' accepted)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad_request(f"{name}: expected true or false, got {value!r}")


def check_value(field: Field, value: Any) -> Any:
    """A string, text, boolean, integer, number or enum field's value, checked against its declaration."""
    name = field.name
    if field.kind in ("string", "text"):
        if not isinstance(value, str) or (field.kind == "text" and not value.strip()):
            raise bad_request(f"{name}: expected a non-empty string, got {value!r}")
    elif field.kind == "enum":
        if value not in field.enum:
            raise bad_request(f"{name}: expected one of {', '.join(field.enum)}, got {value!r}")
    elif field.kind == "boolean":
        return parse_bool(value, name)
    elif field.kind == "integer":
        low, high = field.minimum, field.maximum
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            wanted = f"an integer in {low}..{high}" if high is not None else _at_least(low)
            raise bad_request(f"{name}: expected {wanted}, got {value!r}")
    elif field.kind == "number":
        low, high = field.minimum, field.maximum
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise bad_request(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
    else:
        raise TypeError(f"{name}: a {field.kind} field has its own parser")
    return value


def _at_least(low: int) -> str:
    return "a positive integer" if low == 1 else f"an integer >= {low}"


def parse_criteria(crit: Any) -> list[str]:
    """Preset names or criteria text (a string or a list of strings), normalised."""
    if not isinstance(crit, (str, list)) or (isinstance(crit, list) and not all(isinstance(c, str) for c in crit)):
        raise bad_request(
            f"criteria: expected preset names or criteria text (a string or a list of strings), got {json_type(crit)}"
        )
    return normalize_criteria(crit)


def scoring_overrides(data: dict[str, Any]) -> dict[str, Any]:
    """ScoringConfig fields of a request, type-checked (values are checked again by ScoringConfig)."""
    out: dict[str, Any] = {}
    for field in SCORING_FIELDS:
        value = data.get(field.name)
        if value is not None:
            out[field.name] = parse_criteria(value) if field.kind == "criteria" else check_value(field, value)
    return out


def parse_few_shot(items: Any, decoder: VisualDecoder, pairwise: bool) -> list[FewShotExample]:
    """In-context examples: [{"image": b64, "verdict": true|false|"yes"|"no", "prompt"?, "reference"?}]."""
    if not isinstance(items, list):
        raise bad_request(f"few_shot: expected a list of examples, got {json_type(items)}")
    if len(items) > FEW_SHOT.maximum:
        raise bad_request(f"few_shot: at most {FEW_SHOT.maximum} examples, got {len(items)}")
    out = []
    for i, ex in enumerate(items):
        where = f"few_shot[{i}]"
        if not isinstance(ex, dict) or "image" not in ex or "verdict" not in ex:
            raise bad_request(f'{where}: expected {{"image": <base64>, "verdict": true|false, "prompt"?: ...}}')
        unknown = sorted(set(ex) - set(FEW_SHOT_KEYS))
        if unknown:
            raise bad_request(f"{where}: unknown field(s) {', '.join(unknown)}")
        verdict = ex["verdict"]
        if isinstance(verdict, str) and verdict.lower() in ("yes", "no"):
            verdict = verdict.lower() == "yes"
        if not isinstance(verdict, bool):
            raise bad_request(f'{where}.verdict: expected true/false or "yes"/"no", got {verdict!r}')
        prompt = ex.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise bad_request(f"{where}.prompt: expected a non-empty string")
        if pairwise and "reference" not in ex:
            raise bad_request(f"{where}.reference: pairwise examples need the reference they were judged against")
        reference = decoder.visual(ex["reference"], f"{where}.reference") if "reference" in ex else None
        out.append(FewShotExample(decoder.visual(ex["image"], f"{where}.image"), verdict, prompt, reference))
    return out
