"""The live reward curve's data: what the Reward LoRA Trainer node sends the browser after each step (the
"rewarddance.training" message drawn by web/training_curve.js).

A message is plain JSON: {"node", "step", "total", "reward_mean", "reward_std", "window_std"} (a number the step
did not give, or a non-finite one, is None: JSON has no NaN and the browser would drop the whole message). The
first message of a run also carries "earlier": the points of the steps before it in the run's log.jsonl ([] for a
new run, steps 1..N for a run resumed after step N), so the browser starts the curve from them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..run_log import keyed_rows, read_rows, row_kind

CURVE_EVENT = "rewarddance.training"
CURVE_FIELDS = ("reward_mean", "reward_std", "window_std")


def finite_or_none(value: Any) -> float | None:
    """A real number as a float, anything else (missing, NaN, inf, text, bool) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def curve_point(step: int, row: dict) -> dict[str, Any]:
    """One step's point of the curve: the step and its reward numbers."""
    return {"step": step, **{key: finite_or_none(row.get(key)) for key in CURVE_FIELDS}}


def earlier_points(log_path: Path, step: int) -> list[dict[str, Any]]:
    """The points of the steps before `step` in a run's log (the last row written for a step wins)."""
    rows = keyed_rows(read_rows(log_path), step - 1)
    return [curve_point(r["step"], r) for r in rows if row_kind(r) == "step"]


def curve_message(node_id: str, step: int, total: int, row: dict, earlier: list[dict] | None = None) -> dict[str, Any]:
    """The message for the browser after `step` of `total` (with the earlier points on a run's first message)."""
    message = {"node": node_id, "total": total, **curve_point(step, row)}
    if earlier is not None:
        message["earlier"] = earlier
    return message
