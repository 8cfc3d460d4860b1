"""Decoding a request's visuals: base64 / raw bytes -> `Image` / `Video`.

`VisualDecoder` / `RequestDecoder` refuse other formats than PNG, JPEG and WebP and oversized headers before
decoding, resize each image to the model's input size (`KeptSize`) as soon as it is decoded, and count the decoded
pixels of all requests in flight against one `PixelBudget` (503 with Retry-After when full).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from ..media import UPLOAD_FORMATS, Image, MediaError, Video, fit_size, format_list, load_image_bytes, pil_to_tensor
from ..vlm.internvl import InternVLFamily, best_tile_grid
from ..vlm.qwen2_vl import Qwen2VLFamily
from ..vlm.resize import smart_resize
from .errors import ApiError, bad_request, json_type
from .schema import (
    MAX_FPS,
    MAX_ITEMS,
    VIDEO_KEYS,
)

DATA_URL_RE = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)


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
