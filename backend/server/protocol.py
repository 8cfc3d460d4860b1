"""Request bodies -> engine inputs. Every malformed field gets one `ApiError` that names it and the fix.

Which fields each endpoint takes, and their limits and choices, are declared in `schema` (which /openapi.json
is generated from); the checks here read them from there.

Bodies are JSON (any content type, so `curl -d` works) or multipart/form-data:
- JSON: images are base64 strings (PNG, JPEG or WebP only; a `data:image/...;base64,` prefix is allowed);
  a video is `{"frames": [<base64 image>, ...], "fps": 8}`.
- multipart: file parts named `images`, `candidates` or `reference` carry raw image bytes (repeat the part
  for several images); a part named `json` holds every other field as a JSON object; other text parts are
  string fields (`prompt`, `model`, `criteria`, ...).

Decoding (`VisualDecoder` / `RequestDecoder`) refuses other formats and oversized headers before decoding,
resizes each image to the model's input size (`KeptSize`) as soon as it is decoded, and counts decoded pixels
of all requests in flight against one `PixelBudget` (503 with Retry-After when full).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ..media import UPLOAD_FORMATS, Image, MediaError, Video, fit_size, format_list, load_image_bytes, pil_to_tensor
from ..scoring.config import ScoringConfig, normalize_criteria
from ..scoring.prompts import FewShotExample
from ..vlm.internvl import InternVLFamily, best_tile_grid
from ..vlm.qwen2_vl import Qwen2VLFamily
from ..vlm.resize import smart_resize
from .errors import ApiError, bad_request
from .schema import (
    ENDPOINTS,
    ENTRANTS,
    FEW_SHOT,
    FEW_SHOT_KEYS,
    FILE_FIELDS,
    MAX_FPS,
    MAX_ITEMS,
    SCORING_FIELDS,
    VIDEO_KEYS,
    Field,
)

MAX_PARTS = 2048  # multipart parts per request
DATA_URL_RE = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)
ENDPOINT_FIELDS: dict[str, set[str]] = {name: e.names for name, e in ENDPOINTS.items()}


# --- reading the body -------------------------------------------------------------------------------------------
async def read_payload(request: Any, max_bytes: int, timeout: float | None = None) -> dict[str, Any]:
    """The request body as a dict (JSON or multipart), 413 beyond `max_bytes`, 408 when it takes over `timeout`
    seconds to arrive (a slow client cannot hold a connection and its buffer open)."""
    try:
        return await asyncio.wait_for(_read_payload(request, max_bytes), timeout)
    except asyncio.TimeoutError:
        raise ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within {timeout:g} s (body_timeout_s); send it faster",
        ) from None


async def _read_payload(request: Any, max_bytes: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(request.content_length, max_bytes)
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, max_bytes)
    body = bytearray()
    while chunk := await request.content.readany():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise too_large(len(body), max_bytes)
    return await asyncio.to_thread(parse_json, bytes(body))  # tens of MB of base64 would stall the event loop


def too_large(size: int, limit: int) -> ApiError:
    """The 413 answer for a body over the limit."""
    return ApiError(
        413,
        "body_too_large",
        f"the request body ({size} bytes or more) is over the limit of {limit} "
        "bytes; send fewer or smaller images, or raise --max-body-mb",
    )


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object from the raw body."""
    if not body.strip():
        raise bad_request(
            'the request body is empty; send a JSON object such as {"prompt": "a red fox", "images": ["<base64 png>"]}',
            "invalid_json",
        )
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})", "invalid_json") from exc
    except RecursionError as exc:
        raise bad_request("the request body nests JSON too deeply", "invalid_json") from exc
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got a JSON {type(data).__name__}", "invalid_json")
    try:
        check_text_encodable(data, "")
    except RecursionError as exc:
        raise bad_request("the request body nests JSON too deeply", "invalid_json") from exc
    return data


def check_text_encodable(value: Any, where: str) -> None:
    """Every string of a parsed body is valid Unicode (JSON's \\ud800 escapes can make lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise bad_request(
                f"{where or 'body'}: the text holds a lone surrogate ({exc.reason}); send valid Unicode", "invalid_json"
            ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text_encodable(key, where or "body")
            check_text_encodable(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text_encodable(item, f"{where}[{i}]")


async def _read_multipart(request: Any, max_bytes: int) -> dict[str, Any]:
    """multipart/form-data: file parts become raw-bytes items, the `json` part and text parts become fields."""
    try:
        reader = await request.multipart()
    except Exception as exc:
        raise bad_request(f"malformed multipart body ({exc})", "invalid_multipart") from exc
    data: dict[str, Any] = {}
    total = parts = 0
    while True:
        try:
            part = await reader.next()
        except Exception as exc:
            raise bad_request(f"malformed multipart body ({exc})", "invalid_multipart") from exc
        if part is None:
            break
        parts += 1
        if parts > MAX_PARTS:
            raise ApiError(
                413, "body_too_large", f"more than {MAX_PARTS} multipart parts; send fewer images per request"
            )
        if not hasattr(part, "read_chunk"):
            raise bad_request("nested multipart parts are not supported; send files as flat parts", "invalid_multipart")
        total += 256  # part headers count towards the limit too
        chunks = bytearray()
        while chunk := await part.read_chunk():
            chunks.extend(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise too_large(total, max_bytes)
        name = part.name or ""
        if name in FILE_FIELDS:
            data.setdefault(name, []).append(bytes(chunks))
        elif name == "json":
            fields = parse_json(bytes(chunks))
            clash = sorted(set(fields) & set(data))
            if clash:
                raise bad_request(f"field(s) {', '.join(clash)} given both in the json part and as parts")
            data.update(fields)
        elif name:
            if name in data:
                raise bad_request(f"field {name!r} given twice in the multipart body")
            data[name] = chunks.decode("utf-8", errors="replace")
        else:
            raise bad_request("a multipart part has no name; name file parts images/candidates/reference")
    if "reference" in data and isinstance(data["reference"], list) and len(data["reference"]) == 1:
        data["reference"] = data["reference"][0]
    return data


# --- decoding visuals -----------------------------------------------------------------------------------------------
UNLOADED_KEEP_PIXELS = 16777216  # images kept at most this big before a model's own budget is known (Qwen3-VL's)


class PixelBudget:
    """Decoded pixels held by every request in flight together: 503 with Retry-After beyond `limit`.

    A request holds the pixels of the images it keeps (model-sized) plus, while one is being decoded, that
    image's full decoded size. A request alone in flight is always admitted, so any request within the
    per-request limits can be served on an idle server; the total then stays below max(limit, one request).
    """

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0
        self.peak = 0  # highest `used` seen (tests, diagnostics)
        self._lock = threading.Lock()

    def acquire(self, pixels: int, own: int, where: str) -> None:
        """Take `pixels` for a request that already holds `own`; 503 when others hold some and it would overflow."""
        with self._lock:
            others = self.used - own
            if self.limit is not None and others > 0 and self.used + pixels > self.limit:
                raise ApiError(
                    503,
                    "server_busy",
                    f"{where}: decoding it would take the images of requests in flight to {self.used + pixels} "
                    f"pixels, over max_inflight_pixels ({self.limit}); retry shortly, or send smaller images",
                    {"Retry-After": "1"},
                )
            self.used += pixels
            self.peak = max(self.peak, self.used)

    def release(self, pixels: int) -> None:
        """Give back `pixels`."""
        with self._lock:
            self.used -= pixels


def out_of_memory(where: str) -> ApiError:
    """The 503 for a MemoryError while decoding: the server is short of memory, the input is not at fault."""
    return ApiError(
        503,
        "out_of_memory",
        f"{where}: the server ran out of memory while decoding it (other requests hold memory); "
        "retry shortly, or send smaller images",
        {"Retry-After": "1"},
    )


@dataclass(frozen=True)
class KeptSize:
    """The size a model's processor resizes an image to, so a larger one can be resized as soon as it is decoded.

    Called as a `media.Fit`: (width, height) -> the size to keep, or None for an image within `max_pixels`
    (kept exactly as decoded). `kind` says which processor rule it mirrors:
    - "qwen": Qwen-VL's smart_resize (both sides multiples of `factor`, area in [min_pixels, max_pixels]); the
      processor then finds the image at its target size and leaves it alone, so scores are unchanged;
    - "tiles": InternVL's tile grid (the canvas of `tile`-sized tiles the processor crops; its thumbnail tile
      is then made from the canvas instead of the original);
    - "area": aspect kept, scaled to `max_pixels` (a model whose processor is not known yet).
    """

    kind: str
    max_pixels: int
    resample: int = 3  # the processor's PIL filter
    factor: int = 28
    min_pixels: int = 1
    tile: int = 448
    min_tiles: int = 1
    max_tiles: int = 1

    def __call__(self, width: int, height: int) -> tuple[int, int] | None:
        if width * height <= self.max_pixels:
            return None
        if self.kind == "qwen":
            try:
                h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
            except ValueError:  # an aspect ratio the model refuses: the processor says so later
                return None
            return w, h
        if self.kind == "tiles":
            cols, rows = best_tile_grid(height, width, self.tile, self.min_tiles, self.max_tiles)
            return cols * self.tile, rows * self.tile
        return fit_size(width, height, self.max_pixels)

    @classmethod
    def of_model(cls, model: Any) -> KeptSize | None:
        """The kept size of a loaded `RewardModel`'s images (None when it has no local VLM family)."""
        family = getattr(getattr(model, "vlm", None), "family", None)
        resample = int(getattr(family, "resample", 3))
        resample = resample if resample in range(6) else 3  # PIL's codes; the processors fall back to bicubic too
        if isinstance(family, Qwen2VLFamily):
            lo, hi = family.pixel_range()
            return cls("qwen", hi, resample, factor=family.patch_size * family.merge_size, min_pixels=lo)
        if isinstance(family, InternVLFamily):
            low = int(family.preprocessor.get("min_patches", 1))
            high = max(low, family.max_tiles())
            return cls(
                "tiles", high * family.tile_size**2, resample, tile=family.tile_size, min_tiles=low, max_tiles=high
            )
        return None


class VisualDecoder:
    """Shared by all requests: the decode limits, a cache of decoded images and the in-flight pixel budget.

    Each request decodes through its own `RequestDecoder` (`request()`), which downscales images to the
    model's pixel budget as soon as they are decoded and holds their pixels in the budget until `release()`.
    The cache is what lets requests from different clients that send the same reference image share
    the engine's prefix cache when they land in one batch; it also skips decoding repeats.
    Called directly (`start_request()`, `visuals()`, ...), it decodes like a request without a model budget
    and without in-flight accounting, one request per thread at a time.
    """

    def __init__(
        self,
        max_image_pixels: int,
        cache_bytes: int = 256 * 2**20,
        max_request_pixels: int | None = None,
        max_inflight_pixels: int | None = None,
    ):
        self.max_image_pixels = max_image_pixels
        self.max_request_pixels = max_request_pixels or 4 * max_image_pixels
        self.inflight = PixelBudget(max_inflight_pixels)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[bytes, tuple[Image, int]] = OrderedDict()  # key -> (image, pixels decoded)
        self._cached = 0
        self._lock = threading.Lock()  # requests are decoded on worker threads
        self._local = threading.local()  # the direct caller's current request, per thread

    def request(self, kept: KeptSize | None = None) -> RequestDecoder:
        """A decoder for one request: images resized to `kept` once decoded, their pixels counted in flight."""
        return RequestDecoder(self, kept, self.inflight)

    # --- direct use (no model budget, no in-flight accounting) ----------------------------------------------------
    def start_request(self) -> None:
        """Begin a request on this thread (resets the per-request pixel count)."""
        self._local.current = RequestDecoder(self)

    def _current(self) -> RequestDecoder:
        if getattr(self._local, "current", None) is None:
            self.start_request()
        return self._local.current

    def image(self, item: Any, where: str) -> Image:
        """One image from a base64 string (optionally a data URL) or raw bytes."""
        return self._current().image(item, where)

    def visual(self, item: Any, where: str) -> Image | Video:
        """An image (string / bytes) or a video ({"frames": [...], "fps": n})."""
        return self._current().visual(item, where)

    def video(self, item: dict, where: str) -> Video:
        """A video object: base64 frames of one size plus the frame rate they were sampled at."""
        return self._current().video(item, where)

    def visuals(self, items: Any, where: str, maximum: int = MAX_ITEMS) -> list[Image | Video]:
        """A non-empty list of at most `maximum` visuals."""
        return self._current().visuals(items, where, maximum)

    # --- the cache -------------------------------------------------------------------------------------------------
    def cached(self, key: bytes) -> tuple[Image, int] | None:
        """A decoded image (and the pixels its decoding took) by key, or None."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def remember(self, key: bytes, img: Image, decoded: int) -> tuple[Image, int]:
        """Cache an image (unless another request cached it meanwhile: keep one object); what is now cached."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            size = img.pil.width * img.pil.height * 3
            if size <= self.cache_bytes:
                self._cache[key] = (img, decoded)
                self._cached += size
                while self._cached > self.cache_bytes:
                    _, (old, _) = self._cache.popitem(last=False)
                    self._cached -= old.pil.width * old.pil.height * 3
        return img, decoded


class RequestDecoder:
    """One request's decoding: its pixel limit, the model's pixel budget and its share of the in-flight budget."""

    def __init__(
        self,
        shared: VisualDecoder,
        kept: KeptSize | None = None,
        inflight: PixelBudget | None = None,
    ):
        self.shared = shared
        self.kept = kept
        self.inflight = inflight
        self.decoded = 0  # pixels decoded (or taken from the cache) for this request, against max_request_pixels
        self.held = 0  # pixels this request holds in the in-flight budget
        self.closed = False
        self._lock = threading.Lock()  # release() comes from the event loop while a worker thread decodes

    def start_request(self) -> None:
        """Reset the per-request pixel count (`parse_request` calls it first)."""
        self.decoded = 0

    def release(self) -> None:
        """The request finished or failed: give its pixels back; anything it still decodes is refused."""
        with self._lock:
            self.closed = True
            held, self.held = self.held, 0
        if self.inflight is not None and held:
            self.inflight.release(held)

    def __enter__(self) -> RequestDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _spend(self, pixels: int, where: str) -> None:
        """Count pixels against max_request_pixels (413 beyond)."""
        self.decoded += pixels
        limit = self.shared.max_request_pixels
        if self.decoded > limit:
            raise ApiError(
                413,
                "too_many_pixels",
                f"{where}: the request decodes to more than {limit} pixels in all; send fewer or smaller images or frames",
            )

    def _hold(self, pixels: int, where: str) -> None:
        """Take pixels from the in-flight budget (503 when full)."""
        with self._lock:
            if self.closed:
                raise ApiError(503, "request_abandoned", f"{where}: the request ended while it was being decoded")
            if self.inflight is not None:
                self.inflight.acquire(pixels, self.held, where)
            self.held += pixels

    def _unhold(self, pixels: int) -> None:
        """Give back up to `pixels` of what this request holds."""
        with self._lock:
            pixels = min(pixels, self.held)
            self.held -= pixels
        if self.inflight is not None and pixels > 0:
            self.inflight.release(pixels)

    def image(self, item: Any, where: str) -> Image:
        """One image from a base64 string (optionally a data URL) or raw bytes, counted against both budgets."""
        try:
            raw = item if isinstance(item, (bytes, bytearray)) else decode_base64(item, where)
            key = hashlib.sha256(raw).digest() + repr(self.kept).encode()
            hit = self.shared.cached(key)
            if hit is not None:
                img, decoded = hit
                self._spend(decoded, where)
                self._hold(img.pil.width * img.pil.height, where)
                return img
            img, decoded = self._decode(bytes(raw), where)
            return self.shared.remember(key, img, decoded)[0]
        except MemoryError as exc:
            raise out_of_memory(where) from exc

    def _decode(self, raw: bytes, where: str) -> tuple[Image, int]:
        """Decode and downscale one image; the in-flight budget holds its full size while it decodes."""
        charged = 0

        def admit(pixels: int) -> None:
            nonlocal charged
            self._spend(pixels, where)
            self._hold(pixels, where)
            charged = pixels

        try:
            resample = self.kept.resample if self.kept is not None else 3
            img = load_image_bytes(raw, where, self.shared.max_image_pixels, UPLOAD_FORMATS, self.kept, resample, admit)
        except MediaError as exc:
            self._unhold(charged)
            hint = f"; send {format_list(UPLOAD_FORMATS)} bytes" if "not a readable image" in str(exc) else ""
            raise bad_request(f"{exc}{hint}", "invalid_image") from exc
        except BaseException:
            self._unhold(charged)
            raise
        self._unhold(charged - img.pil.width * img.pil.height)  # keep only the model-sized copy's pixels
        return img, charged

    def visual(self, item: Any, where: str) -> Image | Video:
        """An image (string / bytes) or a video ({"frames": [...], "fps": n})."""
        if isinstance(item, (str, bytes, bytearray)):
            return self.image(item, where)
        if isinstance(item, dict):
            try:
                return self.video(item, where)
            except MemoryError as exc:
                raise out_of_memory(where) from exc
        raise bad_request(
            f"{where}: expected a base64 image string or a video object "
            f'{{"frames": [<base64 image>, ...], "fps": 8}}, got {json_type(item)}'
        )

    def video(self, item: dict, where: str) -> Video:
        """A video object: base64 frames of one size plus the frame rate they were sampled at."""
        unknown = sorted(set(item) - set(VIDEO_KEYS))
        if unknown:
            raise bad_request(
                f"{where}: unknown video field(s) {', '.join(unknown)}; a video is "
                '{"frames": [<base64 image>, ...], "fps": 8}'
            )
        frames, fps = item.get("frames"), item.get("fps")
        if not isinstance(frames, list) or not frames:
            raise bad_request(f"{where}.frames: expected a non-empty list of base64 frames")
        if len(frames) > MAX_ITEMS:
            raise bad_request(f"{where}.frames: {len(frames)} frames is over the limit of {MAX_ITEMS}; sample fewer")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= MAX_FPS:
            raise bad_request(f"{where}.fps: expected the frame rate as a positive number (e.g. 8), got {fps!r}")
        images = [self.image(f, f"{where}.frames[{i}]") for i, f in enumerate(frames)]
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise bad_request(f"{where}.frames: every frame must have the same size, got {sorted(sizes)}")
        return Video(frames=torch.stack([pil_to_tensor(im.pil) for im in images]), fps=float(fps), source=where)

    def visuals(self, items: Any, where: str, maximum: int = MAX_ITEMS) -> list[Image | Video]:
        """A non-empty list of at most `maximum` visuals."""
        if not isinstance(items, list):
            raise bad_request(f"{where}: expected a list of base64 images, got {json_type(items)}")
        if not items:
            raise bad_request(f"{where}: the list is empty; send at least one image")
        if len(items) > maximum:
            raise bad_request(f"{where}: {len(items)} items is over the limit of {maximum} per request; split it")
        return [self.visual(item, f"{where}[{i}]") for i, item in enumerate(items)]


def decode_base64(item: Any, where: str) -> bytes:
    """Bytes of a base64 string or data URL."""
    if not isinstance(item, str):
        raise bad_request(f"{where}: expected a base64 string, got {json_type(item)}")
    text = item.strip()
    m = DATA_URL_RE.match(text)
    if m:
        media = (m.group(1) or "").lower()
        if media and not media.startswith("image/"):
            raise bad_request(f"{where}: the data URL holds {media!r}; send an image/* data URL", "invalid_image")
        text = text[m.end() :]
    if not text:
        raise bad_request(f"{where}: the base64 string is empty", "invalid_base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(
            f"{where}: not valid base64 ({exc}); encode the image file's bytes with base64", "invalid_base64"
        ) from exc


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


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
    """A string, text, boolean, integer or enum field's value, checked against its declaration."""
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
