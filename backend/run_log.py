"""The JSONL log of a training run (reward-model or RL): append rows, read them, and cut rows newer than the
checkpoint a run resumes from (a crashed run may have logged steps that the resumed run takes again)."""

from __future__ import annotations

import json
from pathlib import Path


def append_row(path: Path, row: dict) -> None:
    """Add one row (one JSON object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_rows(path: Path) -> list[dict]:
    """All rows of a log ([] when there is none)."""
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.is_file()
        else []
    )


def truncate_after(path: Path, step: int) -> list[dict]:
    """Drop rows with a step after `step` (rewriting the file) and return the rows kept."""
    rows = [r for r in read_rows(path) if r.get("step", 0) <= step]
    if path.is_file():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows
