"""A synthetic preference set from real photos: the untouched crop beats a visibly edited one.

Crops of scikit-image's sample photos; the rejected image of each pair is the same crop with one edit
(a strong colour cast, a heavy blur, or a pasted grey block). A reward model that learns the preference
has learned to see the edit, which makes it a usable reward for the search and RL benchmarks.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..sample_photos import sample_photos
from .data import PreferencePair, write_pairs

EDITS = ("colour_cast", "blur", "pasted_block")
PROMPT = "a clean, natural photograph"


def edit(img: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    """The rejected version of `img`."""
    if kind == "colour_cast":
        arr = np.asarray(img).astype(np.float32)
        channel = rng.randrange(3)
        arr[..., channel] = arr[..., channel] * 0.4 + 255 * 0.6
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=max(2.0, img.width / 16)))
    if kind == "pasted_block":
        out = img.copy()
        w, h = img.width // 2, img.height // 2
        x, y = rng.randrange(img.width - w + 1), rng.randrange(img.height - h + 1)
        out.paste((128, 128, 128), (x, y, x + w, y + h))
        return out
    raise ValueError(f"unknown edit {kind!r}; choose from {', '.join(EDITS)}")


def make_synthetic_pairs(
    out: str | Path,
    n: int = 200,
    size: int = 112,
    edits: tuple[str, ...] = EDITS,
    seed: int = 0,
    eval_fraction: float = 0.0,
) -> Path:
    """Write `n` pairs (PNG files + pairs.jsonl) under `out`; returns the JSONL path. With `eval_fraction`, that
    share of the pairs (other crops of the same photos) goes to eval.jsonl instead, for train-rm's `eval_pairs`."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    photos = sample_photos()
    pairs = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 0.9))
        top, left = rng.randrange(h - side + 1), rng.randrange(w - side + 1)
        crop = (
            Image.fromarray(photo[top : top + side, left : left + side])
            .convert("RGB")
            .resize((size, size), Image.BICUBIC)
        )
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        kind = edits[i % len(edits)]
        chosen, rejected = out / "images" / f"{i:04d}_chosen.png", out / "images" / f"{i:04d}_{kind}.png"
        crop.save(chosen)
        edit(crop, kind, rng).save(rejected)
        pairs.append(
            PreferencePair(
                PROMPT,
                f"images/{chosen.name}",
                f"images/{rejected.name}",
                reason=f"The edited image has a {kind.replace('_', ' ')}.",
            )
        )
    n_eval = round(n * eval_fraction)
    if n_eval:
        write_pairs(pairs[n - n_eval :], out / "eval.jsonl")
    return write_pairs(pairs[: n - n_eval], out / "pairs.jsonl")
