"""Shared fixtures: tiny checkpoints of every family (written once per session) and real sample photos."""

from __future__ import annotations

import pytest
from PIL import Image as PILImage

from rewarddance.backend.vlm.registry import family_names
from rewarddance.backend.vlm.tiny import write_tiny_checkpoint

FAMILIES = list(family_names())
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family name -> directory of a tiny random-weight checkpoint."""
    root = tmp_path_factory.mktemp("tiny")
    return {f: write_tiny_checkpoint(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session")
def reward_models(tiny_dirs):
    """family name -> RewardModel on the tiny checkpoint (fp32, CPU)."""
    from rewarddance.backend import RewardModel

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = RewardModel.from_pretrained(str(tiny_dirs[family]), dtype="fp32", device="cpu")
        return cache[family]

    return get


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """A folder of real photos (scikit-image's samples) saved as PNG, smaller copies for speed."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        arr = getattr(data, name)()
        img = PILImage.fromarray(arr).convert("RGB")
        img.thumbnail((320, 320))
        img.save(root / f"{name}.png")
    return root


@pytest.fixture(scope="session")
def photo_paths(photo_dir):
    """Sorted list of the sample photo paths."""
    return sorted(photo_dir.glob("*.png"))


@pytest.fixture(scope="session")
def ray_images(tmp_path_factory):
    """A folder of six small random images and one file that is not an image (the Ray rerank tests)."""
    from helpers import write_ray_images

    return write_ray_images(tmp_path_factory.mktemp("ray_images"))
