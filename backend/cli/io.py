"""Result-file formats of the command line: prompts files, result rows (JSONL / CSV, appended and re-read for
--resume), the media a folder holds, the image / animated-image writer and the folder of search candidates.
No argparse here."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from ..run_log import read_rows
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
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if "file" not in row or "prompt" not in row:
                raise CLIError(f'--prompts {path}:{n}: each line needs "file" and "prompt"')
            out[str(row["file"])] = str(row["prompt"])
    return out


def read_table_prompts(path: Path, text: str, delimiter: str) -> dict[str, str]:
    """A CSV / TSV prompts file: file and prompt columns, with an optional `file,prompt` header row."""
    out = {}
    for n, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if not row or (n == 1 and row[:2] == ["file", "prompt"]):
            continue
        if len(row) < 2:
            raise CLIError(f"--prompts {path}:{n}: expected two columns, file and prompt")
        out[row[0]] = row[1]
    return out


def read_done(out: Path | None) -> list[dict]:
    """Rows already in an output file (for --resume)."""
    if out is None or not out.is_file():
        return []
    if out.suffix.lower() == ".csv":
        with out.open(newline="", encoding="utf-8") as fh:
            return [
                {
                    "path": r["path"],
                    "score": float(r["score"]),
                    "prompt": r.get("prompt", ""),
                    "sha": r.get("sha") or None,
                    "settings": r.get("settings") or None,
                }
                for r in csv.DictReader(fh)
            ]
    return read_rows(out)  # a line cut short by an interrupted run is skipped


def rewrite_rows(out: Path, rows: list[dict]) -> None:
    """Replace the output's rows with `rows` (atomically: a crash leaves the old file or the new one)."""
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)  # the same suffix: the same format
    tmp.unlink(missing_ok=True)
    append_rows(tmp, rows)
    if not rows:
        tmp.write_text("")
    os.replace(tmp, out)


def append_rows(out: Path | None, rows: list[dict]) -> None:
    """Append scored rows to the output (JSONL or CSV), so finished work survives an interrupt."""
    if out is None or not rows:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        new = not out.is_file() or out.stat().st_size == 0
        with out.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=ROW_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
    else:
        with out.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


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
