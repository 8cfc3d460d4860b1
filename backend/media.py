"""Visual inputs: turn files, PIL images, ComfyUI IMAGE tensors and frame stacks into `Image` / `Video`.

Everything a user can hand the engine passes through here once, is validated, and comes out as one of
two small types the VLM families understand:

- `Image`: either a PIL RGB image (files and PIL inputs: resized later the way the checkpoint's own
  processor does it) or a float tensor [H, W, 3] in [0, 1] (ComfyUI IMAGE rows: resized later with
  differentiable torch ops on the model's device).
- `Video`: frames [T, H, W, 3] in [0, 1] plus the frame rate they were sampled at.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps, ImageSequence

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
ANIMATION_EXTENSIONS = {".gif"}
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}


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


def load_image_file(path: str | os.PathLike) -> Image:
    """Read an image file (any Pillow format; grayscale, RGBA and 16-bit converted) as an `Image`."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file {str(path)!r} does not exist; check the path")
    return _decode_image(path, str(path))


def load_image_bytes(data: bytes, source: str = "<bytes>", max_pixels: int | None = None) -> Image:
    """Decode an encoded image (PNG, JPEG, WebP, ... bytes) exactly as `load_image_file` decodes a file."""
    return _decode_image(io.BytesIO(data), source, max_pixels)


def _decode_image(fp: Any, source: str, max_pixels: int | None = None) -> Image:
    """Open, orient (EXIF) and convert one image to RGB; every failure becomes a `MediaError` naming `source`."""
    try:
        with PILImage.open(fp) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise MediaError(
                    f"{source}: {img.width}x{img.height} is over the limit of {max_pixels} pixels; "
                    "downscale it before sending"
                )
            img.load()
            rgb = pil_to_rgb(ImageOps.exif_transpose(img), source)  # as transformers' load_image does
    except MediaError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise MediaError(f"{source} is not a readable image ({type(exc).__name__}: {exc})") from exc
    return Image(pil=rgb, source=source)


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


def load_video_file(path: str | os.PathLike) -> Video:
    """Decode a video file (GIF/animated WebP with Pillow; mp4/webm/... with the optional PyAV)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix in ANIMATION_EXTENSIONS or suffix == ".webp":
        return _load_animation(path)
    try:
        import av  # optional dependency: pip install av  (or rewarddance[video])
    except ImportError as exc:
        raise MediaError(
            f"{str(path)!r}: decoding {suffix} video needs PyAV; install it with `pip install av` "
            "(or `pip install rewarddance[video]`), or pass frames as a tensor"
        ) from exc
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    except Exception as exc:
        raise MediaError(f"{str(path)!r} is not a readable video ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise MediaError(f"{str(path)!r} has no video frames")
    return Video(frames=torch.stack(frames).float() / 255.0, fps=fps, source=str(path))


def _load_animation(path: Path) -> Video:
    """Read an animated GIF/WebP with Pillow into a `Video` (frame durations give the fps)."""
    try:
        with PILImage.open(path) as img:
            frames, durations = [], []
            for frame in ImageSequence.Iterator(img):
                frames.append(pil_to_tensor(pil_to_rgb(frame.copy(), str(path))))
                durations.append(frame.info.get("duration", img.info.get("duration", 100)) or 100)
    except Exception as exc:
        raise MediaError(f"{str(path)!r} is not a readable animation ({type(exc).__name__}: {exc})") from exc
    fps = 1000.0 / (sum(durations) / len(durations))
    return Video(frames=torch.stack(frames), fps=fps, source=str(path))


def is_video_path(path: str | os.PathLike) -> bool:
    """True for file names the engine treats as video (by extension; animated WebP is sniffed)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS or suffix in ANIMATION_EXTENSIONS:
        return True
    if suffix == ".webp" and Path(path).is_file():
        try:
            with PILImage.open(path) as img:
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
