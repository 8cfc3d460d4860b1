"""scikit-image's bundled colour photos: the real pictures tests, benchmarks and the tiny flow model use."""

from __future__ import annotations

from pathlib import Path

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


def named_sample_photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled colour photos by name, as uint8 [H, W, 3] (those that need no download)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise RuntimeError("the sample photos come from scikit-image: `pip install scikit-image`") from exc
    out = {}
    for name in PHOTOS:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # a photo that needs a download (offline) is skipped
            continue
        arr = arr[0] if isinstance(arr, tuple) else arr
        if arr.ndim == 3:
            out[name] = np.ascontiguousarray(arr[..., :3])
    if not out:
        raise RuntimeError("no scikit-image sample photo could be loaded; install scikit-image")
    return out


def sample_photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photos as uint8 [H, W, 3] (those that need no download)."""
    return list(named_sample_photos().values())


def write_sample_photos(folder: str | Path) -> list[Path]:
    """Save each sample photo as `folder/<name>.png` (every one a different picture); the files written."""
    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, photo in named_sample_photos().items():
        Image.fromarray(photo).save(out / f"{name}.png")
        paths.append(out / f"{name}.png")
    return paths
