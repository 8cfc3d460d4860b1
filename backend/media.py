"""Visual inputs: turn files, PIL images, ComfyUI IMAGE tensors and frame stacks into `Image` / `Video`.

Everything a user can hand the engine passes through here once, is validated, and comes out as one of
two small types the VLM families understand:

- `Image`: either a PIL RGB image (files and PIL inputs: resized later the way the checkpoint's own
  processor does it) or a float tensor [H, W, 3] in [0, 1] (ComfyUI IMAGE rows: resized later with
  differentiable torch ops on the model's device).
- `Video`: frames [T, H, W, 3] in [0, 1] plus the frame rate they were sampled at.

Encoded images are decoded only from an allow-list of formats, with only those formats' Pillow plugins
(so EPS can never start Ghostscript): bytes from clients (`load_image_bytes`, the server) PNG, JPEG or WebP;
still-image files on this machine (`load_image_file`: CLI, nodes, training) also BMP and TIFF; animated
files (`load_video_file`) GIF or WebP. Every other format (ICO, ICNS, TGA, JPEG 2000, QOI, EPS, ...) is
refused from its header, naming the accepted ones. Sizes are checked from the header before any pixel is
decoded, and animated files decode frames one at a time up to a frame and pixel budget.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
ANIMATION_EXTENSIONS = {".gif"}
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}

# Pillow format names each kind of input may be decoded as; nothing else is ever handed to a decoder.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")  # bytes a client sends (the server)
FILE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")  # still-image files on this machine (IMAGE_EXTENSIONS)
ANIMATION_FORMATS = ("GIF", "WEBP")  # animated files read as a video
MAX_ANIMATION_FRAMES = 256  # frames decoded from one animated file or video; later frames are never decoded
MAX_ANIMATION_PIXELS = 2**26  # pixels of all decoded frames of one animated file or video together
FORMAT_NAMES = {"WEBP": "WebP"}
DRAFT_MARGIN = 2  # a JPEG over its kept size is DCT-decoded at no less than this many times it per side

# Leading bytes of common formats, only to name a refused format in the message (never to decode).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"DDS ", "DDS"),
    (b"BM", "BMP"),
)

log = logging.getLogger("rewarddance.media")


class MediaError(ValueError):
    """A visual input could not be read or has the wrong shape; the message names it and the fix."""


@dataclass(eq=False)
class Image:
    """One still image: a PIL RGB image (from a file or PIL) or a float tensor [H, W, 3] in [0, 1]."""

    pil: PILImage.Image | None = None
    tensor: torch.Tensor | None = None
    source: str = "<image>"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        if self.pil is not None:
            return self.pil.height, self.pil.width
        return int(self.tensor.shape[0]), int(self.tensor.shape[1])


@dataclass(eq=False)
class Video:
    """A clip: frames [T, H, W, 3] float in [0, 1] and the frame rate they were taken at."""

    frames: torch.Tensor
    fps: float
    source: str = "<video>"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of each frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


Visual = Union[Image, Video]
# fit(width, height) -> the (width, height) to keep a decoded image at, or None to keep it as decoded.
Fit = Callable[[int, int], Union[tuple[int, int], None]]


def pil_to_rgb(img: PILImage.Image, source: str = "<image>") -> PILImage.Image:
    """Convert any PIL mode (grayscale, RGBA, palette, 16-bit, CMYK) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return PILImage.fromarray(arr).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = arr / 255.0 if arr.max() > 1.0 else arr
        return PILImage.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise MediaError(f"{source}: cannot convert PIL mode {img.mode!r} to RGB ({exc})") from exc


def load_image_file(path: str | os.PathLike, max_pixels: int | None = None) -> Image:
    """Read a still-image file (PNG, JPEG, WebP, BMP, TIFF; grayscale, RGBA and 16-bit converted) as an `Image`.

    Without `max_pixels` only Pillow's own decompression-bomb guard bounds the size.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file {str(path)!r} does not exist; check the path")
    return _decode_image(path, str(path), FILE_FORMATS, max_pixels)


def load_image_bytes(
    data: bytes,
    source: str = "<bytes>",
    max_pixels: int | None = None,
    formats: Sequence[str] = UPLOAD_FORMATS,
    fit: Fit | None = None,
    resample: int = 3,
    admit: Callable[[int], None] | None = None,
) -> Image:
    """Decode an encoded image (PNG, JPEG or WebP bytes by default) the way `load_image_file` decodes a file.

    `max_pixels` refuses larger images from the header, before decoding. `fit(width, height)` gives the size
    to keep an image at (None: keep it as decoded); the image is resized to it with PIL filter `resample` as
    soon as it is decoded (a JPEG is first decoded at the smallest DCT scale still at least that big).
    `admit(pixels)` is called with the pixel count about to be decoded, before decoding, and may raise.
    """
    return _decode_image(io.BytesIO(data), source, tuple(formats), max_pixels, fit, resample, admit)


def format_list(formats: Sequence[str]) -> str:
    """'PNG, JPEG or WebP' for messages."""
    names = [FORMAT_NAMES.get(f, f) for f in formats]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def sniff_format(head: bytes) -> str | None:
    """The format a file's first bytes announce (for messages only), or None when unknown."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def open_image(fp: Any, source: str, formats: Sequence[str]) -> PILImage.Image:
    """Open lazily (header only) with the plugins of `formats` alone; MediaError naming the format otherwise."""
    try:
        img = PILImage.open(fp, formats=list(formats))
    except MemoryError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise MediaError(f"{source}: {exc}; downscale it") from exc
    except PILImage.UnidentifiedImageError as exc:
        raise _format_error(sniff_format(_head(fp)), source, formats) from exc
    except Exception as exc:  # Pillow raises many types for broken headers
        raise MediaError(f"{source} is not a readable image ({type(exc).__name__}: {exc})") from exc
    found = "JPEG" if img.format == "MPO" else img.format  # MPO: a camera JPEG with extra pictures after it
    if found not in formats:
        img.close()
        raise _format_error(found, source, formats)
    return img


def _head(fp: Any) -> bytes:
    """The first 16 bytes of a path or a seekable file object (its position kept)."""
    if isinstance(fp, (str, os.PathLike)):
        with open(fp, "rb") as f:
            return f.read(16)
    position = fp.tell()
    fp.seek(0)
    head = fp.read(16)
    fp.seek(position)
    return head


def _format_error(found: str | None, source: str, formats: Sequence[str]) -> MediaError:
    """The message for a refused or unknown format."""
    accepted = format_list(formats)
    if found is None:
        return MediaError(f"{source} is not a readable image (not {accepted} data)")
    return MediaError(
        f"{source} is a {FORMAT_NAMES.get(found, found)} image; only {accepted} images are accepted here; "
        "convert it (e.g. to PNG)"
    )


def check_pixels(img: PILImage.Image, source: str, max_pixels: int | None) -> None:
    """MediaError when the header's width x height is over `max_pixels` (nothing is decoded yet)."""
    if max_pixels is not None and img.width * img.height > max_pixels:
        raise MediaError(
            f"{source}: {img.width}x{img.height} is over the limit of {max_pixels} pixels; downscale it before sending"
        )


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most `max_pixels` pixels; unchanged when it fits."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit_within(max_pixels: int) -> Fit:
    """A `Fit` that keeps images of at most `max_pixels` as they are and scales larger ones down to it."""

    def fit(width: int, height: int) -> tuple[int, int] | None:
        return None if width * height <= max_pixels else fit_size(width, height, max_pixels)

    return fit


def _decode_image(
    fp: Any,
    source: str,
    formats: tuple[str, ...],
    max_pixels: int | None = None,
    fit: Fit | None = None,
    resample: int = 3,
    admit: Callable[[int], None] | None = None,
) -> Image:
    """Open, check the size, decode, orient (EXIF), convert to RGB and resize one image to what `fit` keeps.

    Every failure of the file becomes a `MediaError` naming `source`; MemoryError and `admit`'s refusal
    propagate as they are (the server's fault, not the file's). The image is oriented in place and resized
    before any full-size copy, so a large image is held once at full size.
    """
    with open_image(fp, source, formats) as img:
        check_pixels(img, source, max_pixels)
        target = _draft_jpeg(img, fit) if fit is not None and img.format in ("JPEG", "MPO") else None
        if admit is not None:
            admit(img.width * img.height)
        rgb = _load_rgb(img, source)
        if fit is not None:
            target = target or fit(rgb.width, rgb.height)
            if target is not None and target != rgb.size:
                rgb = rgb.resize(target, PILImage.Resampling(resample))
        return Image(pil=rgb.copy() if rgb is img else rgb, source=source)  # `img` is closed on leaving


def _draft_jpeg(img: PILImage.Image, fit: Fit) -> tuple[int, int] | None:
    """For a JPEG `fit` shrinks: decode at the smallest DCT scale (1/2..1/8) still `DRAFT_MARGIN` x the kept size.

    The margin leaves the final resize (the processor's filter) real work, so the result stays close to a
    full decode. Returns the kept (width, height), computed from the full size as displayed (EXIF orientation).
    """
    swap = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # rotated by 90 degrees on display
    width, height = (img.height, img.width) if swap else img.size
    target = fit(width, height)
    if target is not None:
        wanted = (min(width, DRAFT_MARGIN * target[0]), min(height, DRAFT_MARGIN * target[1]))
        img.draft(img.mode, (wanted[1], wanted[0]) if swap else wanted)
    return target


def _load_rgb(img: PILImage.Image, source: str) -> PILImage.Image:
    """Decode an opened image's pixels as oriented RGB (possibly `img` itself)."""
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # as transformers' load_image does
        return pil_to_rgb(img, source)
    except (MediaError, MemoryError):
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise MediaError(f"{source} is not a readable image ({type(exc).__name__}: {exc})") from exc


def image_from_tensor(t: torch.Tensor, source: str = "<tensor>") -> Image:
    """Wrap one ComfyUI IMAGE row [H, W, C] (C in 1, 3, 4; values in [0, 1]) as an `Image`."""
    if not isinstance(t, torch.Tensor):
        raise MediaError(f"{source}: expected a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 3 or t.shape[-1] not in (1, 3, 4):
        raise MediaError(
            f"{source}: expected an image tensor [H, W, C] with C in (1, 3, 4) (ComfyUI IMAGE layout), "
            f"got shape {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        raise MediaError(f"{source}: expected float values in [0, 1], got dtype {t.dtype}; divide uint8 by 255")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise MediaError(f"{source}: image has an empty side, shape {tuple(t.shape)}")
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    elif t.shape[-1] == 4:
        alpha = t[..., 3:4]
        t = t[..., :3] * alpha + (1.0 - alpha)
    return Image(tensor=t, source=source)


def images_from_batch(batch: torch.Tensor, source: str = "images") -> list[Image]:
    """Split a ComfyUI IMAGE batch [B, H, W, C] (or one [H, W, C]) into `Image`s."""
    if isinstance(batch, torch.Tensor) and batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise MediaError(f"{source}: expected a ComfyUI IMAGE tensor [B, H, W, C], got {shape}")
    return [image_from_tensor(batch[i], f"{source}[{i}]") for i in range(batch.shape[0])]


def video_from_frames(frames: torch.Tensor, fps: float, source: str = "<video>") -> Video:
    """Wrap frames [T, H, W, C] in [0, 1] at `fps` frames per second as a `Video`."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise MediaError(f"{source}: expected video frames [T, H, W, C] with C in (1, 3, 4), got {shape}")
    if frames.shape[0] < 1:
        raise MediaError(f"{source}: the video has no frames")
    if not frames.is_floating_point():
        raise MediaError(f"{source}: expected float frames in [0, 1], got dtype {frames.dtype}")
    if not (isinstance(fps, (int, float)) and fps > 0 and np.isfinite(fps)):
        raise MediaError(f"{source}: fps must be a positive number, got {fps!r}")
    if frames.shape[-1] == 1:
        frames = frames.expand(-1, -1, -1, 3)
    elif frames.shape[-1] == 4:
        frames = frames[..., :3] * frames[..., 3:4] + (1.0 - frames[..., 3:4])
    return Video(frames=frames, fps=float(fps), source=source)


def pil_to_tensor(img: PILImage.Image) -> torch.Tensor:
    """PIL RGB -> float tensor [H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.asarray(pil_to_rgb(img), dtype=np.uint8).copy()).float() / 255.0


def load_video_file(
    path: str | os.PathLike, max_frames: int = MAX_ANIMATION_FRAMES, max_pixels: int = MAX_ANIMATION_PIXELS
) -> Video:
    """Decode a video file (GIF/animated WebP with Pillow; mp4/webm/... with the optional PyAV).

    Frames are decoded one at a time and decoding stops at `max_frames` frames or `max_pixels` pixels over
    all frames (a warning names the cut); the frames after it are never decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix in ANIMATION_EXTENSIONS or suffix == ".webp":
        return _load_animation(path, max_frames, max_pixels)
    try:
        import av  # optional dependency: pip install av  (or rewarddance[video])
    except ImportError as exc:
        raise MediaError(
            f"{str(path)!r}: decoding {suffix} video needs PyAV; install it with `pip install av` "
            "(or `pip install rewarddance[video]`), or pass frames as a tensor"
        ) from exc
    source = str(path)
    try:
        with av.open(source) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
            budget = frame_budget(
                stream.codec_context.width, stream.codec_context.height, source, max_frames, max_pixels
            )
            frames = []
            for frame in container.decode(stream):
                if len(frames) == budget:
                    _warn_cut(source, budget)
                    break
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
    except (MediaError, MemoryError):
        raise
    except Exception as exc:
        raise MediaError(f"{source!r} is not a readable video ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise MediaError(f"{source!r} has no video frames")
    return Video(frames=torch.stack(frames).float() / 255.0, fps=fps, source=source)


def frame_budget(width: int, height: int, source: str, max_frames: int, max_pixels: int) -> int:
    """How many frames of width x height to decode within `max_frames` and `max_pixels`; MediaError if none fits."""
    per_frame = max(1, width * height)
    if per_frame > max_pixels:
        raise MediaError(
            f"{source}: frames of {width}x{height} are over the limit of {max_pixels} pixels; downscale the video"
        )
    return max(1, min(max_frames, max_pixels // per_frame))


def _warn_cut(source: str, budget: int) -> None:
    log.warning(
        "%s: only its first %d frames are decoded (the frame/pixel budget); trim it to score it all", source, budget
    )


def _load_animation(path: Path, max_frames: int, max_pixels: int) -> Video:
    """Read an animated GIF/WebP with Pillow into a `Video` (frame durations give the fps), frame by frame."""
    source = str(path)
    with open_image(path, source, ANIMATION_FORMATS) as img:
        budget = frame_budget(img.width, img.height, source, max_frames, max_pixels)
        try:
            total = int(getattr(img, "n_frames", 1))  # read from frame headers; nothing is decoded
            frames, durations = [], []
            for i in range(min(budget, total)):
                img.seek(i)
                frames.append(pil_to_tensor(pil_to_rgb(img, source)))
                durations.append(img.info.get("duration", 100) or 100)
        except (MediaError, MemoryError):
            raise
        except Exception as exc:
            raise MediaError(f"{source!r} is not a readable animation ({type(exc).__name__}: {exc})") from exc
    if total > budget:
        _warn_cut(source, budget)
    fps = 1000.0 / (sum(durations) / len(durations))
    return Video(frames=torch.stack(frames), fps=fps, source=source)


def is_video_path(path: str | os.PathLike) -> bool:
    """True for file names the engine treats as video (by extension; animated WebP is sniffed)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS or suffix in ANIMATION_EXTENSIONS:
        return True
    if suffix == ".webp" and Path(path).is_file():
        try:
            with PILImage.open(path, formats=["WEBP"]) as img:
                return bool(getattr(img, "is_animated", False))
        except Exception:
            return False
    return False


def load_visual_file(path: str | os.PathLike) -> Visual:
    """Read a file as an `Image` or a `Video` depending on its kind."""
    return load_video_file(path) if is_video_path(path) else load_image_file(path)


def to_visual(item: Any, source: str = "input") -> Visual:
    """Coerce one user input (path, PIL image, [H,W,C] tensor, `Image`, `Video`) into a `Visual`."""
    if isinstance(item, (Image, Video)):
        return item
    if isinstance(item, (str, os.PathLike)):
        return load_visual_file(item)
    if isinstance(item, PILImage.Image):
        return Image(pil=pil_to_rgb(item, source), source=source)
    if isinstance(item, torch.Tensor):
        if item.ndim == 4 and item.shape[0] == 1:
            item = item[0]
        return image_from_tensor(item, source)
    if isinstance(item, np.ndarray):
        arr = item.astype(np.float32) / 255.0 if item.dtype == np.uint8 else item.astype(np.float32)
        return image_from_tensor(torch.from_numpy(arr), source)
    raise MediaError(
        f"{source}: unsupported input type {type(item).__name__}; pass a file path, a PIL image, "
        "an IMAGE tensor [H, W, C] in [0, 1], or rewarddance.backend.media.Video(frames, fps)"
    )


def to_visuals(items: Any, name: str = "images") -> list[Visual]:
    """Coerce a batch input (list of inputs, or an IMAGE tensor [B, H, W, C]) into a list of `Visual`s."""
    if isinstance(items, torch.Tensor) and items.ndim == 4:
        return list(images_from_batch(items, name))
    if isinstance(items, (Image, Video, str, os.PathLike, PILImage.Image)) or (
        isinstance(items, torch.Tensor) and items.ndim == 3
    ):
        items = [items]
    if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
        raise MediaError(f"{name}: expected a list of images or an IMAGE tensor, got {type(items).__name__}")
    if len(items) == 0:
        raise MediaError(f"{name}: no images given; pass at least one")
    return [to_visual(item, f"{name}[{i}]") for i, item in enumerate(items)]
