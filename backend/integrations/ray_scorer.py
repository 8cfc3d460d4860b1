"""The Ray actor of a Ray rerank: it holds one RewardModel, decodes its batch's images itself and scores them
(pointwise, or pairwise against each row's reference); an unreadable image becomes a row with its error."""

from __future__ import annotations

from typing import Any

import numpy as np


class RewardActor:
    """One loaded RewardModel; called by Ray Data on batches of manifest rows, returns their result columns."""

    def __init__(self, model: str, loading: dict[str, Any], scoring: dict[str, Any], mode: str):
        from ..reward_model import RewardModel

        self.rm = RewardModel.from_pretrained(model, **loading, **scoring)
        self.mode = mode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score one batch (columns id, path, prompt, reference, criteria) into id, path, prompt, score, error."""
        return score_batch(self.rm, batch, self.mode)


def score_batch(rm: Any, batch: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """The result columns of one batch: each row decoded here, rows sharing a reference and criteria scored in one
    call; a row whose image (or reference) cannot be read gets score NaN and its error
    (the error column is "" for a scored row)."""
    from ..media import MediaError, load_visual_file

    n = len(batch["id"])
    scores = np.full(n, np.nan, dtype=np.float64)
    errors = np.full(n, "", dtype=object)  # "" = scored (an all-None column would come back as NaN)
    groups: dict[tuple, list[tuple[int, Any]]] = {}
    for i in range(n):
        try:
            visual = load_visual_file(str(batch["path"][i]))
        except (MediaError, OSError) as exc:
            errors[i] = str(exc) or type(exc).__name__
            continue
        key = (column(batch, "reference", i) if mode == "pairwise" else None, column(batch, "criteria", i))
        groups.setdefault(key, []).append((i, visual))
    for (reference, criteria), members in groups.items():
        overrides = {"criteria": criteria} if criteria else {}
        rows = [i for i, _ in members]
        visuals = [v for _, v in members]
        prompts = [str(batch["prompt"][i]) for i in rows]
        try:
            if reference is not None:
                ref = load_visual_file(reference)
                result = rm.compare(visuals, ref, prompts, **overrides)
            else:
                result = rm.score(visuals, prompts, **overrides)
        except (MediaError, OSError) as exc:  # the reference image is unreadable: every row that needs it
            for i in rows:
                errors[i] = f"reference {reference}: {exc}"
            continue
        scores[rows] = result.scores
    return {
        "id": np.asarray(batch["id"], dtype=object),
        "path": np.asarray(batch["path"], dtype=object),
        "prompt": np.asarray(batch["prompt"], dtype=object),
        "score": scores,
        "error": errors,
    }


def column(batch: dict[str, np.ndarray], name: str, i: int) -> str | None:
    """Row `i` of an optional text column, or None when the column is absent or the cell empty."""
    if name not in batch:
        return None
    value = batch[name][i]
    if value is None or (isinstance(value, float) and value != value):  # Ray turns an all-None column into NaN
        return None
    return str(value) or None
