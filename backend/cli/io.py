"""Result-file formats of the command line: prompts files, result rows (JSONL / CSV, appended and re-read for
--resume), the media a folder holds, the image / animated-image writer and the folder of search candidates.
No argparse here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..json_lines import json_objects
from ..run_log import append_text, read_jsonl, replace_text, writing
from .errors import CLIError

ROW_FIELDS = ["path", "score", "prompt", "sha", "settings"]  # the columns of a CSV results file


def list_media(directory: Path) -> list[Path]:
    """Image and video files under `directory`, sorted."""
    from ..media import ANIMATION_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    if not directory.is_dir():
        raise CLIError(f"{str(directory)!r} is not a directory; pass the folder of generations")
    exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | ANIMATION_EXTENSIONS
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def read_prompts_file(path: Path) -> dict[str, str]:
    """Per-file prompts: JSONL {"file", "prompt"}, a JSON object, or a CSV/TSV with file,prompt columns."""
    if not path.is_file():
        raise CLIError(f"--prompts file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return read_json_prompts(path, text)
        if suffix == ".jsonl":
            return read_jsonl_prompts(path, text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--prompts {path}: invalid JSON ({exc})") from exc
    return read_table_prompts(path, text, "\t" if suffix == ".tsv" else ",")


def read_json_prompts(path: Path, text: str) -> dict[str, str]:
    """A .json prompts file: one object mapping file names to prompts."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise CLIError(f"--prompts {path}: a .json file must be an object mapping file names to prompts")
    return {str(k): str(v) for k, v in data.items()}


def read_jsonl_prompts(path: Path, text: str) -> dict[str, str]:
    """A .jsonl prompts file: one {"file", "prompt"} object per line; blank lines are skipped."""
    try:
        rows = json_objects(text, f"--prompts {path}", 'an object with "file" and "prompt"')
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    out = {}
    for n, row in rows:
        if "file" not in row or "prompt" not in row:
            raise CLIError(f'--prompts {path} line {n}: each line needs "file" and "prompt"')
        out[str(row["file"])] = str(row["prompt"])
    return out


def read_table_prompts(path: Path, text: str, delimiter: str) -> dict[str, str]:
    """A CSV / TSV prompts file: file and prompt columns, with an optional `file,prompt` header row."""
    out = {}
    for n, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if not row or (n == 1 and row[:2] == ["file", "prompt"]):
            continue
        if len(row) < 2:
            raise CLIError(f"--prompts {path} line {n}: expected two columns, file and prompt")
        out[row[0]] = row[1]
    return out


RESUME_HINT = "the rows scored so far are kept: free some space and run the same command with --resume"


def read_done(out: Path | None) -> list[dict]:
    """Rows already in an output file that --resume can trust (complete, well-formed rows only)."""
    return read_results(out)[0]


def read_results(out: Path | None) -> tuple[list[dict], int]:
    """(the complete, well-formed rows of a results file, how many were dropped: cut short by an interrupted
    run, malformed or glued together). A last line without its newline is never trusted."""
    if out is None or not out.is_file():
        return [], 0
    if out.suffix.lower() == ".csv":
        rows, dropped = read_csv_rows(out.read_bytes())
    else:
        rows, dropped = read_jsonl(out)
    if any("path" not in row for row in rows):
        raise CLIError(
            f"--resume: {str(out)!r} is not a rerank results file (a row without a path); choose another --out"
        )
    valid = [v for v in map(valid_row, rows) if v is not None]
    return valid, dropped + len(rows) - len(valid)


def read_csv_rows(data: bytes) -> tuple[list[dict], int]:
    """A CSV results file's records as dicts by its header, and how many were dropped (a last record without its
    line end, a record with the wrong number of fields)."""
    text = data.decode("utf-8", errors="replace")
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    dropped = 0
    if records and not text.endswith("\n"):
        records.pop()  # cut short: its last field (or the rest of the row) is missing
        dropped += 1
    if not records:
        return [], dropped
    header, body = records[0], records[1:]
    rows = [dict(zip(header, r)) for r in body if len(r) == len(header)]
    return rows, dropped + len(body) - len(rows)


def valid_row(row: dict) -> dict | None:
    """A results row as --resume reads it (path, score as a float, prompt, sha, settings; a missing sha or
    settings is None), or None when it is not a complete row of ours (no path, a score that is not a number,
    settings that are not a JSON object)."""
    path, score, settings = row.get("path"), row.get("score"), row.get("settings") or None
    if not isinstance(path, str) or not path:
        return None
    if isinstance(score, str):
        try:
            score = float(score)
        except ValueError:
            return None
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    if settings is not None:
        try:
            if not isinstance(json.loads(settings), dict):
                return None
        except (TypeError, ValueError):
            return None
    extras = {k: v for k, v in row.items() if k not in ROW_FIELDS}
    prompt, sha = str(row.get("prompt") or ""), row.get("sha") or None
    return {"path": path, "score": float(score), "prompt": prompt, "sha": sha, "settings": settings, **extras}


def format_rows(out: Path, rows: list[dict], header: bool) -> str:
    """Rows as the output's format writes them (JSONL lines, or CSV records with an optional header)."""
    if out.suffix.lower() != ".csv":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rewrite_rows(out: Path, rows: list[dict]) -> None:
    """Replace the output's rows with `rows` (atomically: a crash leaves the old file or the new one)."""
    with writing(out, "the file is unchanged"):
        replace_text(out, format_rows(out, rows, header=True) if rows else "")


def append_rows(out: Path | None, rows: list[dict]) -> None:
    """Append scored rows to the output (JSONL or CSV) as whole lines in one synced write, so finished work
    survives an interrupt (a crash can only cut the last line, which --resume drops and rescores)."""
    if out is None or not rows:
        return
    with writing(out, RESUME_HINT):
        new = not out.is_file() or out.stat().st_size == 0
        append_text(out, format_rows(out, rows, header=new))


def write_search_output(image: Any, out: str) -> None:
    """Write an image [H, W, 3] or a video [T, H, W, 3] (an animated image, 8 fps) in [0, 1]."""
    from PIL import Image as PILImage

    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 4:
        frames = [PILImage.fromarray(f) for f in arr]
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=125, loop=0)
    else:
        PILImage.fromarray(arr).save(out)


CANDIDATES_FILE = "candidates.jsonl"  # the index `search --save-candidates DIR` writes next to the images
CANDIDATE_FIELDS = {  # its rows' schema, shown in `rewarddance search --help`
    "file": "image file name, relative to DIR (NNNNN.png; videos NNNNN.webp)",
    "prompt": "the search prompt",
    "score": "the reward the search recorded for it",
    "round": "the algorithm's round that produced it",
    "index": "its position in the search history (0, 1, ...; = NNNNN)",
    "seed": "the search's --seed",
    "algorithm": "the search's --algorithm",
    "denoiser_calls": "denoiser calls spent when it was scored",
    "scorer_calls": "scorer calls spent when it was scored",
}


def check_new_folder(path: str, flag: str) -> None:
    """A folder a command will fill must not exist yet, or be empty (so its rows are this run's only)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{flag} {path!r} is a file; pass a new directory")
    if folder.is_dir() and any(folder.iterdir()):
        raise CLIError(f"{flag} {path!r} is not empty; pass a new directory (e.g. {path.rstrip('/')}-2)")


class CandidateWriter:
    """Saves each search candidate as it is scored: DIR/NNNNN.png (videos: an animated NNNNN.webp) and one row
    of CANDIDATE_FIELDS in DIR/candidates.jsonl; `index` is the candidate's position in the search history."""

    def __init__(self, folder: str | Path, prompt: str, seed: int, algorithm: str):
        self.folder, self.prompt, self.seed, self.algorithm, self.count = Path(folder), prompt, seed, algorithm, 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, candidate: Any, image: Any) -> None:
        """Write one candidate's image and append its row (one write per row, so an interrupt keeps the rest)."""
        name = f"{self.count:05d}.{'webp' if image.ndim == 4 else 'png'}"
        write_search_output(image, str(self.folder / name))
        row = {
            "file": name,
            "prompt": self.prompt,
            "score": candidate.score,
            "round": candidate.round,
            "index": self.count,
            "seed": self.seed,
            "algorithm": self.algorithm,
            "denoiser_calls": candidate.denoiser_calls,
            "scorer_calls": candidate.scorer_calls,
        }
        with (self.folder / CANDIDATES_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        self.count += 1
