"""The output folder of a Ray rerank: result shards `part-NNNNN.parquet` (or `.jsonl`), each written whole
(a temporary file renamed into place, so a killed job leaves only complete shards), and `_settings.json`, the
scoring settings the shards were made with. Resume reads the ids already in the shards and skips them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..run_log import replace_file

SHARD_FORMATS = ("parquet", "jsonl")
RESULT_COLUMNS = ("id", "path", "prompt", "score", "error")
SETTINGS_FILE = "_settings.json"  # "_": Parquet readers of the folder skip it
SHARD_NAME = re.compile(r"^part-(\d{5,})\.(parquet|jsonl)$")


def shard_paths(out: Path) -> list[Path]:
    """The complete shards in `out`, in the order they were written."""
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := SHARD_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_shard(path: Path) -> list[dict]:
    """One shard's rows (id, path, prompt, score: None for an unreadable row, error: None when scored)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [normal_row(r) for r in pq.read_table(path).to_pylist()]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [normal_row(json.loads(line)) for line in lines if line.strip()]


def normal_row(row: dict) -> dict:
    """A result row with every column of RESULT_COLUMNS (NaN scores as None)."""
    score = row.get("score")
    if isinstance(score, float) and math.isnan(score):
        score = None
    return {**{c: row.get(c) for c in RESULT_COLUMNS}, "score": score}


def read_results(out: Path) -> list[dict]:
    """Every row of every shard in `out`."""
    return [row for path in shard_paths(out) for row in read_shard(path)]


def done_ids(out: Path) -> set[str]:
    """The ids already in `out`'s shards (scored or reported unreadable): what a resumed run skips."""
    return {str(row["id"]) for row in read_results(out)}


def write_shard(out: Path, index: int, rows: list[dict], fmt: str) -> Path:
    """Write `rows` as shard `index` in `fmt` (parquet or jsonl), atomically; returns its path."""
    path = out / f"part-{index:05d}.{fmt}"
    rows = [normal_row(r) for r in rows]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.float64() if c == "score" else pa.string()) for c in RESULT_COLUMNS])
        table = pa.Table.from_pylist(rows, schema=schema)
        replace_file(path, lambda fh: pq.write_table(table, fh), binary=True)
    else:
        replace_file(path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in rows)))
    return path


def next_shard_index(out: Path) -> int:
    """The number the next shard gets (one past the highest in `out`)."""
    paths = shard_paths(out)
    return int(SHARD_NAME.match(paths[-1].name).group(1)) + 1 if paths else 0


def prepare_output(out: Path, settings: dict, overwrite: bool) -> None:
    """Make `out` ready for this run: refuse a file, and shards made with other settings (unless `overwrite`: the
    old shards are removed), then record `settings`. Shards made with the same settings are kept (resume)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; with --ray, --out is a folder of result shards")
    existing = shard_paths(out)
    saved_path = out / SETTINGS_FILE
    if overwrite:
        for path in existing:
            path.unlink()
        existing = []
    if existing and saved_path.is_file():
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        if saved != settings:
            raise ValueError(f"--out {str(out)!r} {settings_difference(saved, settings)}")
    elif existing:
        raise ValueError(f"--out {str(out)!r} holds result shards but no {SETTINGS_FILE}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    replace_file(saved_path, lambda fh: fh.write(json.dumps(settings, indent=2, sort_keys=True) + "\n"))


def settings_difference(saved: dict, now: dict) -> str:
    """Which scoring settings of the earlier run differ from this one's, in words."""
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    changes = ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys)
    return f"was scored with other settings ({changes}); its scores would not compare: choose another --out, or pass --overwrite to start over"
