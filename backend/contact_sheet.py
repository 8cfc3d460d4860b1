"""Contact sheets: a grid of thumbnails with rank and score drawn on each."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .media import Image, load_visual_file
from .run_log import replace_file


def thumbnail(path: Path, size: int) -> PILImage.Image:
    """A square-fitted thumbnail of an image file or a video's first frame."""
    visual = load_visual_file(path)
    if isinstance(visual, Image):
        img = visual.pil
    else:
        frame = (visual.frames[0].clamp(0, 1) * 255).round().byte().numpy()
        img = PILImage.fromarray(frame)
    img = img.copy()
    img.thumbnail((size, size))
    return img


def write_contact_sheet(paths: list[Path], scores: list[float], out: Path, size: int = 256, columns: int = 4) -> Path:
    """Write an image grid of `paths` in the given order, labelled '#rank score' (PNG, JPEG or WebP by `out`'s
    suffix), replacing `out` atomically."""
    if not paths:
        raise ValueError("contact sheet: nothing to draw")
    columns = min(columns, len(paths))
    rows = math.ceil(len(paths) / columns)
    sheet = PILImage.new("RGB", (columns * size, rows * size), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (path, score) in enumerate(zip(paths, scores)):
        x, y = (i % columns) * size, (i // columns) * size
        thumb = thumbnail(path, size)
        sheet.paste(thumb, (x + (size - thumb.width) // 2, y + (size - thumb.height) // 2))
        label = f"#{i + 1}  {score:.4g}"
        box = draw.textbbox((x + 6, y + 6), label, font=font)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
        draw.text((x + 6, y + 6), label, fill=(255, 255, 255), font=font)
    save_replacing(sheet, out)
    return out


def save_replacing(image: PILImage.Image, out: Path) -> None:
    """Save `image` in the format of `out`'s suffix through a temporary file renamed over `out` (a crash or a full
    disk never leaves a half-written image, nor touches the file it replaces)."""
    fmt = PILImage.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"contact sheet: {out.suffix!r} is not an image format Pillow writes; use .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_file(out, lambda fh: image.save(fh, format=fmt), binary=True)
