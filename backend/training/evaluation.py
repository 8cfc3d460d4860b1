"""Reward-model evaluation on preference pairs: the numbers the paper reports, and calibration.

- pairwise accuracy: both orders of every non-tie pair (P(image 2 beats image 1) > 0.5 exactly when
  image 2 is the chosen one); ties are reported apart (mean |P - 0.5|, lower is better);
- pointwise accuracy: score(chosen) > score(rejected);
- calibration: a reliability table of the pairwise probabilities (10 bins) and its expected calibration error;
- spread: mean and standard deviation of the pointwise scores (RewardDance's reward-hacking signal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..scoring.prompts import pairwise_query, pointwise_query
from .data import PreferencePair
from .objectives import VisualCache

CHUNK = 16


def evaluate_pairs(
    rm: Any, pairs: list[PreferencePair], progress: Callable[[int, int], None] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Accuracy, calibration and spread of a local RewardModel on preference pairs (batched)."""
    if not pairs:
        raise ValueError("pairs: nothing to evaluate")
    base = rm.settings(overrides)
    load = VisualCache()
    probs, labels, tie_margins, point_hits, point_scores = [], [], [], [], []
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start : start + CHUNK]
        pair_q, point_q = [], []
        for p in chunk:
            cfg = base if p.criteria is None else base.with_overrides(criteria=p.criteria)
            chosen, rejected = load(p.chosen), load(p.rejected)
            pair_q += [pairwise_query(rejected, chosen, p.prompt, cfg), pairwise_query(chosen, rejected, p.prompt, cfg)]
            point_q += [pointwise_query(chosen, p.prompt, cfg), pointwise_query(rejected, p.prompt, cfg)]
        with rm.use(), torch.no_grad():
            pair_p = rm.probabilities(pair_q, base).tolist()
            point_p = rm.probabilities(point_q, base).tolist()
        for i, p in enumerate(chunk):
            forward, backward = pair_p[2 * i], pair_p[2 * i + 1]  # P(chosen beats rejected), P(rejected beats chosen)
            s_chosen, s_rejected = point_p[2 * i], point_p[2 * i + 1]
            point_scores += [s_chosen, s_rejected]
            if p.tie:
                tie_margins += [abs(forward - 0.5), abs(backward - 0.5)]
                continue
            probs += [forward, backward]
            labels += [1, 0]
            point_hits.append(s_chosen > s_rejected)
        if progress is not None:
            progress(min(start + CHUNK, len(pairs)), len(pairs))
    hits = [(pr > 0.5) == bool(lab) for pr, lab in zip(probs, labels)]
    table, ece = reliability(probs, labels)
    scores = torch.tensor(point_scores)
    return {
        "pairs": len(pairs),
        "ties": sum(p.tie for p in pairs),
        "pairwise_accuracy": sum(hits) / len(hits) if hits else None,
        "pointwise_accuracy": sum(point_hits) / len(point_hits) if point_hits else None,
        "tie_mean_margin": sum(tie_margins) / len(tie_margins) if tie_margins else None,
        "ece": ece,
        "reliability": table,
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()) if len(scores) > 1 else 0.0,
    }


def reliability(probs: list[float], labels: list[int], bins: int = 10) -> tuple[list[dict], float | None]:
    """Per-bin mean predicted probability vs observed frequency, and the expected calibration error."""
    if not probs:
        return [], None
    table, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if not idx:
            continue
        confidence = sum(probs[i] for i in idx) / len(idx)
        frequency = sum(labels[i] for i in idx) / len(idx)
        table.append({"bin": f"{lo:.1f}-{hi:.1f}", "count": len(idx), "mean_p": confidence, "frequency": frequency})
        ece += len(idx) / len(probs) * abs(confidence - frequency)
    return table, ece
