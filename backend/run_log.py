"""JSONL files written a row at a time (training logs, rerank results): append rows, read them back (a last
line cut short by a crash is skipped), and cut a training log's rows newer than the checkpoint a run resumes
from (a crashed run may have logged steps that the resumed run takes again)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_row(path: Path, row: dict) -> None:
    """Add one row (one JSON object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_rows(path: Path) -> list[dict]:
    """All complete rows of a JSONL file ([] when there is none; a line cut short by a crash is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_after(path: Path, step: int) -> list[dict]:
    """Drop rows with a step after `step` (the file is replaced atomically) and return the rows kept."""
    rows = [r for r in read_rows(path) if r.get("step", 0) <= step]
    if path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)
    return rows
