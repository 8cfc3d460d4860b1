"""Fixtures of the server tests: a running backend on the tiny Qwen2.5-VL checkpoint and one small image."""

from __future__ import annotations

import pytest
from helpers import ServerThread, png_b64, random_image

from rewarddance.backend.server.app import create_app

from .server_helpers import tiny_settings


@pytest.fixture(scope="module")
def served(tiny_dirs):
    """A running server (max body 1 MB, 20 ms batching delay) on the tiny Qwen2.5-VL checkpoint (one per module)."""
    with ServerThread(create_app(tiny_settings(tiny_dirs, max_body_mb=1, max_delay_ms=20))) as server:
        yield server


@pytest.fixture(scope="module")
def b64_image():
    """A small random PNG as base64."""
    return png_b64(random_image(48, 64, seed=7))
