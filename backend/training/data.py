"""Preference pairs: JSONL rows or a folder of pairs, validated with one clear error per bad row, and split.

JSONL, one object per line (paths relative to the file):
    {"prompt": "a red fox", "chosen": "a.png", "rejected": "b.png", "criteria"?: "...", "reason"?: "...", "tie"?: false}
Folder layout: <dir>/<pair>/{prompt.txt, chosen.<ext>, rejected.<ext>[, reason.txt, criteria.txt]}.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..json_lines import json_objects
from ..media import ANIMATION_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | ANIMATION_EXTENSIONS
FIELDS = {"prompt", "chosen", "rejected", "criteria", "reason", "tie"}


class DataError(ValueError):
    """A preference file or row is unusable; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class PreferencePair:
    """One human (or synthetic) preference: `chosen` beats `rejected` for `prompt` (or they tie)."""

    prompt: str
    chosen: str
    rejected: str
    criteria: str | None = None
    reason: str | None = None
    tie: bool = False

    def to_json(self) -> dict:
        """The JSONL row (None fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}


def load_pairs(source: str | Path) -> list[PreferencePair]:
    """Pairs from a .jsonl file or a folder of pairs, validated."""
    source = Path(source)
    if source.is_dir():
        return _check_duplicates(_load_folder(source), str(source))
    if not source.is_file():
        raise DataError(f"{str(source)!r} does not exist; pass a pairs .jsonl file or a folder of pairs")
    if source.suffix.lower() != ".jsonl":
        raise DataError(f"{source}: expected a .jsonl file (one JSON object per line) or a folder of pairs")
    try:
        rows = json_objects(
            source.read_text(encoding="utf-8"), str(source), "a JSON object with prompt, chosen and rejected"
        )
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    pairs = [_parse_row(row, source, n) for n, row in rows]
    if not pairs:
        raise DataError(f"{source}: no pairs in the file")
    return _check_duplicates(pairs, str(source))


def _parse_row(row: dict, source: Path, n: int) -> PreferencePair:
    """One pairs-file row as a PreferencePair, every field checked."""
    where = f"{source} line {n}"
    unknown = sorted(set(row) - FIELDS)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DataError(f"{where}: {key!r} is required and must be a non-empty string")
    for key in ("criteria", "reason"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise DataError(f"{where}: {key!r} must be a string")
    if not isinstance(row.get("tie", False), bool):
        raise DataError(f"{where}: 'tie' must be true or false")
    chosen, rejected = (_resolve(row[k], source.parent, where, k) for k in ("chosen", "rejected"))
    if chosen == rejected:
        raise DataError(f"{where}: chosen and rejected are the same file")
    return PreferencePair(
        row["prompt"], chosen, rejected, row.get("criteria"), row.get("reason"), row.get("tie", False)
    )


def _resolve(path: str, base: Path, where: str, key: str) -> str:
    full = Path(path) if Path(path).is_absolute() else base / path
    if not full.is_file():
        raise DataError(f"{where}: {key} file {str(full)!r} does not exist")
    if full.suffix.lower() not in MEDIA_EXTENSIONS:
        raise DataError(f"{where}: {key} {full.name!r} is not an image or video file")
    return str(full.resolve())


def _find_media(folder: Path, stem: str) -> str:
    """The one media file named `stem` in a pair folder."""
    found = [p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in MEDIA_EXTENSIONS]
    if len(found) != 1:
        raise DataError(f"{folder}: expected exactly one {stem}.<png|jpg|webp|mp4...>, found {len(found)}")
    return str(found[0].resolve())


def _read_text(folder: Path, name: str) -> str | None:
    """A stripped text file of a pair folder, or None when it is absent."""
    path = folder / name
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _load_folder(root: Path) -> list[PreferencePair]:
    pairs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / "prompt.txt").is_file():
            raise DataError(f"{d}: missing prompt.txt")
        pairs.append(
            PreferencePair(
                _read_text(d, "prompt.txt") or "",
                _find_media(d, "chosen"),
                _find_media(d, "rejected"),
                _read_text(d, "criteria.txt"),
                _read_text(d, "reason.txt"),
            )
        )
    if not pairs:
        raise DataError(f"{root}: no pair folders (each with prompt.txt, chosen.*, rejected.*)")
    return pairs


def _check_duplicates(pairs: list[PreferencePair], source: str) -> list[PreferencePair]:
    seen: dict[tuple, int] = {}
    for i, p in enumerate(pairs):
        key = (p.prompt, frozenset((p.chosen, p.rejected)))
        if key in seen:
            raise DataError(f"{source}: pair {i + 1} repeats pair {seen[key] + 1} (same prompt and images); remove one")
        seen[key] = i
    return pairs


def split_pairs(
    pairs: list[PreferencePair], eval_fraction: float, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, eval): a seeded shuffle; every pair lands in exactly one side."""
    if not 0 <= eval_fraction < 1:
        raise DataError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(pairs) * eval_fraction)
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def write_pairs(pairs: list[PreferencePair], path: str | Path) -> Path:
    """Write pairs as JSONL (paths kept as given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p.to_json()) + "\n" for p in pairs), encoding="utf-8")
    return path
