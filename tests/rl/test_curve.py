"""The live reward curve's messages (backend/rl/curve.py): the trainer node's per-step "rewarddance.training" data."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rewarddance.backend.rl.curve import CURVE_EVENT, curve_message, curve_point, earlier_points, finite_or_none


def write_log(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_step_message_carries_the_node_step_total_and_reward_numbers():
    row = {"step": 3, "reward_mean": 0.25, "reward_std": 0.125, "window_std": 0.5, "loss": 1.0, "warning": "x"}
    assert CURVE_EVENT == "rewarddance.training"
    assert curve_message("6", 3, 10, row) == {
        "node": "6",
        "total": 10,
        "step": 3,
        "reward_mean": 0.25,
        "reward_std": 0.125,
        "window_std": 0.5,
    }
    assert curve_message("6", 1, 10, row, earlier=[])["earlier"] == []


def test_missing_and_non_finite_numbers_become_null_so_the_message_stays_json():
    row = {"reward_mean": float("nan"), "reward_std": float("inf"), "window_std": True}
    point = curve_point(2, row)
    assert point == {"step": 2, "reward_mean": None, "reward_std": None, "window_std": None}
    assert json.loads(json.dumps(curve_message("1", 2, 4, {}), allow_nan=False))["reward_mean"] is None
    assert finite_or_none(3) == 3.0 and finite_or_none("0.5") is None and finite_or_none(-math.inf) is None


def test_earlier_points_are_the_logged_steps_before_the_resumed_one(tmp_path):
    log = write_log(
        tmp_path / "log.jsonl",
        [
            {"step": 1, "reward_mean": 0.1, "reward_std": 0.01, "window_std": 0.02},
            {"step": 2, "reward_mean": 0.2, "reward_std": 0.02, "window_std": 0.03},
            {"step": 2, "eval": {"reward": 0.9}},  # an evaluation row logged with step 2: not a point
            {"step": 2, "reward_mean": 0.3, "reward_std": 0.03, "window_std": 0.04},  # the run that continued
            {"step": 3, "reward_mean": 0.4, "reward_std": 0.04, "window_std": 0.05},  # this step: not earlier
        ],
    )
    assert earlier_points(log, 3) == [
        {"step": 1, "reward_mean": 0.1, "reward_std": 0.01, "window_std": 0.02},
        {"step": 2, "reward_mean": 0.3, "reward_std": 0.03, "window_std": 0.04},
    ]
    assert earlier_points(log, 1) == []
    assert earlier_points(tmp_path / "absent.jsonl", 5) == []
