"""The record `rewarddance train-rm` leaves in an exported checkpoint (its config, step and scoring
settings), written by the trainer and read by every loader so a trained model scores as it was trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINING_RECORD = "rewarddance_training.json"


def write_training_record(directory: str | Path, data: dict[str, Any]) -> Path:
    """Write `data` as the checkpoint directory's training record; returns its path."""
    path = Path(directory) / TRAINING_RECORD
    path.write_text(json.dumps(data, indent=2))
    return path


def read_training_record(directory: str | Path) -> dict[str, Any]:
    """The checkpoint directory's training record, or {} when it has none (or an unreadable one)."""
    path = Path(directory) / TRAINING_RECORD
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trained_scoring(directory: str | Path) -> dict[str, Any]:
    """The scoring settings a checkpoint was trained with by `rewarddance train-rm` (its defaults), else {}."""
    scoring = read_training_record(directory).get("scoring") or {}
    return scoring if isinstance(scoring, dict) else {}
