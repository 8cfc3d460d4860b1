"""Helpers of the Ray tests: the names of the test images and local rerank's scores to compare with."""

from __future__ import annotations

import json

from rewarddance.backend.cli import main

NAMES = [f"img{i:02d}.png" for i in range(6)]
BROKEN = "broken.png"


def local_rerank(folder, out, *flags: str) -> dict[str, float]:
    """Local `rewarddance rerank`'s scores by file name (its --out rows)."""
    assert main(["rerank", str(folder), "--out", str(out), "--quiet", *flags]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {row["path"].rsplit("/", 1)[-1]: row["score"] for row in rows}
