"""What a Ray rerank scores: the rows of a folder of media or of a manifest table (Parquet, JSONL or CSV with a
`path` column and optional `id`, `prompt`, `reference` and `criteria` columns), checked before Ray starts.

A row is a dict with exactly the keys of ROW_KEYS (None where a column is absent or empty)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..json_lines import json_objects

MANIFEST_SUFFIXES = (".parquet", ".jsonl", ".csv")
ROW_KEYS = ("id", "path", "prompt", "reference", "criteria")
OPTIONAL_COLUMNS = ("id", "prompt", "reference", "criteria")


def folder_rows(root: Path, prompt: str | None, prompts: dict[Path, str] | None = None) -> list[dict]:
    """One row per image/video under `root` (sorted): id = its path relative to `root`, path = its absolute path, the prompt from `prompts`
    (by file) or the shared `prompt`."""
    from ..media import ANIMATION_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | ANIMATION_EXTENSIONS
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise ValueError(f"no images or videos found in {str(root)!r}")
    texts = prompts or {}
    return [
        make_row(
            f.relative_to(root).as_posix(), str(f.absolute()), texts.get(f, prompt), None, None, f"{root}: {f.name}"
        )
        for f in files
    ]


def manifest_rows(path: Path) -> list[dict]:
    """The rows of a manifest table; relative paths (and references) are relative to the manifest's folder."""
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise ValueError(f"manifest {str(path)!r}: expected a .parquet, .jsonl or .csv table (or a folder of images)")
    if not path.is_file():
        raise ValueError(f"manifest {str(path)!r} does not exist; check the path")
    if suffix == ".parquet":
        records = parquet_records(path)
    elif suffix == ".jsonl":
        records = jsonl_records(path)
    else:
        records = csv_records(path)
    return [record_row(record, n, path) for n, record in enumerate(records, 1)]


def parquet_records(path: Path) -> list[dict]:
    """A Parquet manifest's rows as dicts (its known columns only), after checking it has a `path` column."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
        raise ValueError(f"manifest {str(path)!r} is not a readable Parquet file ({exc})") from exc
    check_columns(names, path)
    wanted = [c for c in ROW_KEYS if c in names]
    return pq.read_table(path, columns=wanted).to_pylist()


def jsonl_records(path: Path) -> list[dict]:
    """A JSONL manifest's rows (one JSON object per line; blank lines skipped), each with a `path`."""
    rows = json_objects(
        path.read_text(encoding="utf-8"), f"manifest {str(path)!r}", "a JSON object with a 'path' column"
    )
    for n, record in rows:
        if "path" not in record:
            raise ValueError(f"manifest {str(path)!r} line {n} has no 'path' column; every row needs one")
    return [record for _, record in rows]


def csv_records(path: Path) -> list[dict]:
    """A CSV manifest's rows by its header row, which must name a `path` column."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        check_columns(reader.fieldnames or [], path)
        return list(reader)


def check_columns(names: Iterable[str], path: Path) -> None:
    """Refuse a table without a `path` column, naming the columns it has."""
    names = list(names)
    if "path" not in names:
        have = ", ".join(repr(n) for n in names) or "none"
        raise ValueError(
            f"manifest {str(path)!r} has no 'path' column (its columns: {have}); name the column of image paths "
            f"'path' (optional columns: {', '.join(OPTIONAL_COLUMNS)})"
        )


def record_row(record: dict, n: int, manifest: Path) -> dict:
    """One manifest record as a row: paths resolved against the manifest's folder, id defaulting to the path."""
    path = text_or_none(record.get("path"))
    where = f"manifest {str(manifest)!r} row {n}"
    if path is None:
        raise ValueError(f"{where}: the 'path' column is empty; every row needs an image path")
    reference = text_or_none(record.get("reference"))
    row_id = text_or_none(record.get("id")) or path
    return make_row(
        row_id,
        str(resolve(path, manifest.parent)),
        text_or_none(record.get("prompt")),
        str(resolve(reference, manifest.parent)) if reference else None,
        text_or_none(record.get("criteria")),
        where,
    )


def make_row(
    row_id: str, path: str, prompt: str | None, reference: str | None, criteria: str | None, where: str
) -> dict:
    """A row dict with every key of ROW_KEYS (`where` names it in the message about a blank prompt)."""
    if prompt is not None and not prompt.strip():
        raise ValueError(f"{where}: the prompt is blank; give every row a prompt (or pass one for all: --prompt)")
    return {"id": row_id, "path": path, "prompt": prompt, "reference": reference, "criteria": criteria}


def text_or_none(value: Any) -> str | None:
    """A cell as a string, or None when it is missing, null, NaN or an empty string."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if text != "" else None


def resolve(path: str, base: Path) -> Path:
    """`path` as an absolute path: as given when absolute, else relative to `base` (`~` expanded); the actors
    may run in another working directory, or on another machine."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).absolute()


def complete_rows(rows: list[dict], prompt: str | None, mode: str, reference: str | None) -> list[dict]:
    """Every row with its prompt (the row's, else `prompt`) and, pairwise, its reference (the row's, else
    `reference`); refuses a row without one, and two rows with the same id."""
    seen: set[str] = set()
    out = []
    for n, row in enumerate(rows, 1):
        if row["id"] in seen:
            raise ValueError(f"row {n}: the id {row['id']!r} appears twice; ids (or paths) must be unique")
        seen.add(row["id"])
        text = row["prompt"] or prompt
        if text is None:
            raise ValueError(f"row {n} ({row['id']!r}) has no prompt: add a 'prompt' column or pass --prompt")
        ref = (row["reference"] or reference) if mode == "pairwise" else None
        if mode == "pairwise" and ref is None:
            raise ValueError(
                f"row {n} ({row['id']!r}) has no reference: pairwise needs --reference IMAGE or a 'reference' column"
            )
        out.append({**row, "prompt": text, "reference": ref})
    return out
