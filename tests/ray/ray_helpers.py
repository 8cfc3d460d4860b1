"""Helpers of the Ray tests: the names of the test images and local rerank's scores to compare with."""

from __future__ import annotations

import json

from helpers import RAY_BROKEN_NAME as BROKEN
from helpers import RAY_IMAGE_NAMES as NAMES

from rewarddance.backend.cli import main

__all__ = ["BROKEN", "NAMES", "local_rerank"]


def local_rerank(folder, out, *flags: str) -> dict[str, float]:
    """Local `rewarddance rerank`'s scores by file name (its --out rows)."""
    assert main(["rerank", str(folder), "--out", str(out), "--quiet", *flags]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {row["path"].rsplit("/", 1)[-1]: row["score"] for row in rows}
