"""Strict reading of JSON Lines files a user hands us (prompts, pairs, scores, manifests): one object per line.

Each bad line gets one clear ValueError naming the file and the line. (Run logs, which a crash can cut short, are
read leniently by run_log.read_jsonl instead.)
"""

from __future__ import annotations

import json


def json_objects(text: str, where: str, expected: str = "a JSON object") -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of `text`; ValueError '<where> line N: ...' for a bad line."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} line {n}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{where} line {n}: expected {expected}")
        rows.append((n, row))
    return rows
