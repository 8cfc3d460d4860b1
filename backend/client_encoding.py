"""Client-side encoding: what `RewardModel` takes (paths, PIL images, `Image`s, IMAGE tensors, `Video`s) as API JSON."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from .media import (
    Image,
    MediaError,
    Video,
    images_from_batch,
    is_video_path,
    load_image_file,
    load_video_file,
    pil_to_rgb,
)

RAW_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def _b64(data: bytes) -> str:
    """Bytes as base64 text."""
    return base64.b64encode(data).decode("ascii")


def _png(img: PILImage.Image) -> str:
    """A PIL image as base64 PNG (fast compression)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return _b64(buf.getvalue())


def _tensor_png(t: torch.Tensor) -> str:
    """An [H, W, 3] float tensor in [0, 1] as 8-bit PNG."""
    arr = (t.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return _png(PILImage.fromarray(np.ascontiguousarray(arr)))


def encode_visual(item: Any, where: str = "image") -> str | dict:
    """One input as the API's JSON: a base64 image string or a video object."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if is_video_path(path):
            return encode_visual(load_video_file(path), where)
        if path.suffix.lower() in RAW_IMAGE_SUFFIXES and path.is_file():
            return _b64(path.read_bytes())
        return encode_visual(load_image_file(path), where)
    if isinstance(item, Video):
        return {"frames": [_tensor_png(f) for f in item.frames], "fps": item.fps}
    if isinstance(item, Image):
        return _png(item.pil) if item.pil is not None else _tensor_png(item.tensor[..., :3])
    if isinstance(item, PILImage.Image):
        return _png(pil_to_rgb(item, where))
    if isinstance(item, torch.Tensor):
        if item.ndim == 4 and item.shape[0] == 1:
            item = item[0]
        return encode_visual(images_from_batch(item, where)[0], where)
    raise MediaError(
        f"{where}: unsupported input type {type(item).__name__}; pass a path, a PIL image, an IMAGE tensor or a Video"
    )


def encode_visuals(items: Any, name: str = "images") -> list[str | dict]:
    """A batch input (list, or an IMAGE tensor [B, H, W, C]) as a list of API visuals."""
    if isinstance(items, torch.Tensor) and items.ndim == 4:
        return [encode_visual(img, f"{name}[{i}]") for i, img in enumerate(images_from_batch(items, name))]
    if isinstance(items, (str, os.PathLike, Image, Video, PILImage.Image, torch.Tensor)):
        items = [items]
    if not isinstance(items, Sequence) or not items:
        raise MediaError(f"{name}: expected a non-empty list of images")
    return [encode_visual(item, f"{name}[{i}]") for i, item in enumerate(items)]


def scoring_fields(prompt: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The prompt and the scoring options that are set, as request fields."""
    body = {"prompt": list(prompt) if isinstance(prompt, (list, tuple)) else prompt}
    for key, value in overrides.items():
        if value is not None:
            body[key] = list(value) if isinstance(value, tuple) else value
    return body


def few_shot_json(examples: Any, pairwise: bool) -> list[dict] | None:
    """In-context examples as the API's `few_shot` list (None when there are none)."""
    if not examples:
        return None
    out = []
    for i, ex in enumerate(examples):
        row = {"image": encode_visual(ex.visual, f"few_shot[{i}]"), "verdict": bool(ex.verdict)}
        if ex.prompt:
            row["prompt"] = ex.prompt
        if pairwise and ex.reference is not None:
            row["reference"] = encode_visual(ex.reference, f"few_shot[{i}].reference")
        out.append(row)
    return out
