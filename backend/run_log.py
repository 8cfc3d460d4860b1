"""Files written a row at a time (training logs, rerank results) and the rules that keep them whole across
crashes: a row is appended with one write call (flushed and synced), a last line without its newline is a row
cut short by a crash (never trusted, dropped when the file is repaired), a rewrite goes to a temporary file
that replaces the original in one rename, and a failed write (a full disk) is one message naming the path.

A training log's rows are keyed by step: repairing it for a resume keeps the rows up to the checkpoint's step
and one row per (step, kind), so a restarted run can neither lose nor duplicate a step."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROW_KINDS = ("final_eval", "eval")  # rows logged besides a step's own row (under the same step), by their key


class WriteError(ValueError):
    """A file could not be written (e.g. no space left on device); the message names the path and what is kept."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def write_failure(path: Path | str, exc: OSError, kept: str = "") -> WriteError:
    """The one-line error for a failed write of `path`: the reason ("no space left on device"), what is kept."""
    reason = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
    hint = f"; {kept}" if kept else ""
    return WriteError(f"cannot write {str(path)!r}: {reason}{hint}", exc.errno)


@contextmanager
def writing(path: Path | str, kept: str = "") -> Iterator[None]:
    """Turn an OSError raised while writing `path` into a WriteError naming it (and what is kept)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise write_failure(path, exc, kept) from exc


def sync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_text(path: Path, text: str) -> None:
    """Append whole lines with one write call, flushed and synced (a crash keeps them or cuts the last one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def replace_file(path: Path, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Replace `path` atomically by what `write(file)` writes: a temporary file next to it, synced, renamed over it
    (a crash or a full disk leaves the original untouched and no temporary file behind)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") if binary else tmp.open("w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def replace_text(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically (see replace_file)."""
    replace_file(path, lambda fh: fh.write(text))


def append_row(path: Path, row: dict, kept: str = "") -> None:
    """Add one row (one JSON object per line), with one synced write (a failure names `kept`)."""
    with writing(path, kept):
        append_text(path, json.dumps(row) + "\n")


def complete_lines(data: bytes) -> tuple[list[str], bool]:
    """The lines of `data` that ended with a newline (as text) and whether a cut-short last line was dropped."""
    *whole, tail = data.split(b"\n")
    lines = [line.decode("utf-8", errors="replace").rstrip("\r") for line in whole]
    return lines, bool(tail.strip())


def parse_rows(lines: list[str]) -> tuple[list[dict], int]:
    """The JSON objects among `lines`, and how many non-blank lines were not one (malformed or glued)."""
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """A JSONL file's complete rows and how many lines were dropped (cut short, malformed); ([], 0) if absent."""
    if not path.is_file():
        return [], 0
    lines, torn = complete_lines(path.read_bytes())
    rows, bad = parse_rows(lines)
    return rows, bad + int(torn)


def read_rows(path: Path) -> list[dict]:
    """All complete rows of a JSONL file ([] when there is none; a line cut short by a crash is skipped)."""
    return read_jsonl(path)[0]


def step_of(row: dict) -> int | None:
    """A log row's step (None when it has no integer step: such a row is not one the runtime wrote)."""
    step = row.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def row_kind(row: dict) -> str:
    """Which of a step's rows this is: its own ("step") or an evaluation logged with it."""
    return next((kind for kind in ROW_KINDS if kind in row), "step")


def keyed_rows(rows: list[dict], step: int) -> list[dict]:
    """Rows up to `step`, one per (step, kind) (the last written wins: it belongs to the run that continued),
    in step order."""
    last: dict[tuple[int, str], dict] = {}
    for row in rows:
        s = step_of(row)
        if s is not None and s <= step:
            last.pop((s, row_kind(row)), None)  # re-inserted: the order of the last occurrence
            last[(s, row_kind(row))] = row
    return sorted(last.values(), key=lambda r: r["step"])


def truncate_after(path: Path, step: int) -> list[dict]:
    """Repair a training log for a run continuing from `step`: drop rows after it, cut-short or malformed lines
    and duplicate steps; the file is replaced atomically (only when something changed). The rows kept."""
    rows, dropped = read_jsonl(path)
    kept = keyed_rows(rows, step)
    if path.is_file() and (dropped or kept != rows):
        with writing(path, "the log is unchanged"):
            replace_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
