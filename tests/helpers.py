"""Test helpers shared by several test modules."""

import numpy as np
from PIL import Image as PILImage


def random_image(h: int, w: int, seed: int = 0) -> PILImage.Image:
    """A smooth random RGB PIL image (so resizing differences stay realistic)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return PILImage.fromarray(small).resize((w, h), PILImage.BILINEAR)
