"""Best-of-N selection for ComfyUI batches: top-k indices, a threshold, video grouping, latent passthrough.

ComfyUI passes N images as an IMAGE tensor [N, H, W, C] and a batch of videos as their frames stacked
[N * T, H, W, C]; latents are dicts whose "samples" are [N, ...] (image models) or [N, C, T, h, w] (video
models). Everything here is plain torch so the nodes stay thin and the logic is tested without ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .ranking import check_top_k, ranking_order


@dataclass
class Selection:
    """Chosen indices (best first), their scores, and whether the threshold removed everything."""

    indices: list[int]
    scores: list[float]
    below_threshold: bool = False


def select_top_k(scores: list[float], top_k: int, threshold: float | None = None) -> Selection:
    """The `top_k` best indices (ties: lower index first), keeping only scores >= threshold.

    When the threshold rejects every item the single best one is kept (a graph needs a non-empty batch)
    and `below_threshold` says so.
    """
    if not scores:
        raise ValueError("scores: nothing to select from; pass at least one image")
    top_k = check_top_k(top_k, len(scores))
    order = ranking_order(scores)
    kept = [i for i in order if threshold is None or scores[i] >= threshold]
    below = not kept
    chosen = (kept or order[:1])[:top_k]
    return Selection(chosen, [scores[i] for i in chosen], below)


def video_groups(num_frames: int, frames_per_video: int) -> list[range]:
    """Frame index ranges of each video in a stacked batch of `num_frames` frames."""
    if isinstance(frames_per_video, bool) or not isinstance(frames_per_video, int) or frames_per_video < 1:
        raise ValueError(f"frames_per_video must be a positive integer, got {frames_per_video!r}")
    if num_frames % frames_per_video:
        raise ValueError(
            f"images: {num_frames} frames do not split into videos of {frames_per_video} frames; "
            "set frames_per_video to the length of each video (or 1 for still images)"
        )
    return [range(s, s + frames_per_video) for s in range(0, num_frames, frames_per_video)]


def take_items(images: torch.Tensor, indices: list[int], frames_per_video: int = 1) -> torch.Tensor:
    """Rows of an IMAGE batch for the chosen items (whole videos when frames_per_video > 1), in order."""
    groups = video_groups(images.shape[0], frames_per_video)
    rows = [r for i in indices for r in groups[i]]
    return images[torch.tensor(rows, dtype=torch.long, device=images.device)]


def take_latents(latent: dict[str, Any], indices: list[int], num_items: int) -> dict[str, Any]:
    """A LATENT dict holding only the chosen items, in order (a copy; the input is not modified).

    The latent batch must have one entry per scored item (image or video).
    """
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise ValueError("latent: expected a ComfyUI LATENT dict with a 'samples' tensor")
    samples = latent["samples"]
    if samples.shape[0] != num_items:
        raise ValueError(
            f"latent: its batch has {samples.shape[0]} entries but {num_items} items were scored; "
            "connect the latent that was decoded into these images"
        )
    index = torch.tensor(indices, dtype=torch.long, device=samples.device)
    out = dict(latent)
    out["samples"] = samples[index]
    mask = latent.get("noise_mask")
    if isinstance(mask, torch.Tensor) and mask.shape[0] == num_items:
        out["noise_mask"] = mask[index.to(mask.device)]
    if isinstance(latent.get("batch_index"), list) and len(latent["batch_index"]) == num_items:
        out["batch_index"] = [latent["batch_index"][i] for i in indices]
    return out


def check_scores(scores: list[float], n: int) -> list[float]:
    """Precomputed scores (a scoring node's `scores` list), one finite number per item."""
    values = list(scores)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError("scores: connect the scores output of a scoring node (a list of numbers)")
    values = [float(v) for v in values]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("scores: every score must be a finite number (got NaN or infinity)")
    if len(values) != n:
        raise ValueError(
            f"scores: got {len(values)} scores for {n} items; connect the scores of these same images (or videos)"
        )
    return values
