"""Ray test fixtures: one folder of small images, one of them unreadable."""

from __future__ import annotations

import pytest
from helpers import random_image
from ray_helpers import BROKEN, NAMES


@pytest.fixture(scope="session")
def ray_images(tmp_path_factory):
    """A folder of six small random images and one file that is not an image."""
    root = tmp_path_factory.mktemp("ray_images")
    for i, name in enumerate(NAMES):
        random_image(48 + 8 * i, 64, seed=i).save(root / name)
    (root / BROKEN).write_bytes(b"not an image")
    return root
