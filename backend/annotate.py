"""Preview images with each item's score (and rank) drawn in a corner, for ComfyUI previews and sheets."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .score_text import format_score


def label_for(score: float, rank: int | None = None) -> str:
    """'#2  0.8731' (rank shown when known; the number as `format_score` writes it)."""
    return (f"#{rank}  " if rank is not None else "") + format_score(score)


def draw_label(img: PILImage.Image, text: str) -> PILImage.Image:
    """`img` with `text` on a dark box in the top-left corner, sized to the image."""
    out = img.convert("RGB").copy()
    size = max(10, min(out.width, out.height) // 12)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(out)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    draw.rectangle((0, 0, right - left + 2 * pad, bottom - top + 2 * pad), fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return out


def annotate_batch(images: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """An IMAGE batch [B, H, W, 3] with one label drawn on each image (same shape, float in [0, 1])."""
    if images.shape[0] != len(labels):
        raise ValueError(f"got {len(labels)} labels for {images.shape[0]} images")
    out = []
    for img, text in zip(images, labels):
        arr = (img[..., :3].detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        drawn = draw_label(PILImage.fromarray(np.ascontiguousarray(arr)), text)
        out.append(torch.from_numpy(np.asarray(drawn, dtype=np.float32) / 255.0))
    return torch.stack(out).to(images.device)
