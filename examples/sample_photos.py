"""Write scikit-image's bundled sample photos (real photographs, no download) to a folder for the demo."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "immunohistochemistry",
    "motorcycle_left",
    "hubble_deep_field",
)


def main(out: str) -> None:
    """Save each available sample photo as PNG under `out`."""
    from skimage import data

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            array = loader()
        except Exception:  # some samples need an optional download; skip them offline
            continue
        array = array[0] if isinstance(array, tuple) else array
        Image.fromarray(array).convert("RGB").save(folder / f"{name}.png")
    print(f"sample photos in {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo/photos")
