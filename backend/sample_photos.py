"""scikit-image's bundled colour photos: the real pictures tests, benchmarks and the tiny flow model use."""

from __future__ import annotations

import numpy as np

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "stereo_motorcycle",
)


def sample_photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photos as uint8 [H, W, 3] (those that need no download)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # a photo that needs a download (offline) is skipped
            continue
        arr = arr[0] if isinstance(arr, tuple) else arr
        if arr.ndim == 3:
            out.append(np.ascontiguousarray(arr[..., :3]))
    if not out:
        raise RuntimeError("no scikit-image sample photo could be loaded; install scikit-image")
    return out
