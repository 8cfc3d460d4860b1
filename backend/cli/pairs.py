"""`rewarddance make-pairs`: a pairs file for train-rm from scored images, or the synthetic set from sample photos.

Scored images: `--candidates DIR` (DIR/candidates.jsonl as `search --save-candidates` writes it) or `--images DIR`
with `--prompt`; scores from `--judge FILE.py:FUNC` (a Python function scoring image batches), `--scores JSONL`
(rows {"file", "score"}, files relative to DIR) or `--scores candidates` (candidates.jsonl's score column).
Writes --out (pairs, paths relative to it), <stem>.scores.jsonl (every image's score) and, with --eval-fraction,
<stem>.eval.jsonl (pairs of held-out images only). Without --candidates/--images: the synthetic set (--n, ...) as
DIR/pairs.jsonl and DIR/eval.jsonl (--eval-fraction of the pairs, default 0.1).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..json_lines import json_objects
from .checks import check_writable_folder
from .command import Command
from .errors import CLIError
from .io import list_media

SCORED_ONLY = ("prompt", "judge", "scores", "margin", "keep_ties", "pairs_per_image", "batch_size")
SYNTHETIC_ONLY = ("n", "size", "edits")


@dataclass
class Item:
    """One image to label: its path, its name relative to the source folder, its prompt and score."""

    path: Path
    name: str
    prompt: str
    score: float | None = None


def add_make_pairs_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance make-pairs`."""
    from ..training.synthetic import EDITS

    p.add_argument("--out", required=True, help="pairs .jsonl file (scored images) or folder (synthetic set)")
    p.add_argument("--candidates", default=None, help="folder with candidates.jsonl (search --save-candidates)")
    p.add_argument("--images", default=None, help="a plain folder of images of one --prompt")
    p.add_argument("--prompt", default=None, help="the prompt of every image in --images")
    p.add_argument("--judge", default=None, help="FILE.py:FUNC or module:FUNC scoring images [B,H,W,3] -> [B]")
    p.add_argument("--scores", default=None, help='JSONL rows {"file", "score"}, or "candidates" for their scores')
    p.add_argument("--margin", type=float, default=None, help="|score difference| <= margin is a tie (default 0)")
    p.add_argument("--keep-ties", action="store_true", default=None, help='keep ties as "tie": true rows')
    p.add_argument("--pairs-per-image", type=int, default=None, help="pairing rounds per prompt (default 1)")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=None,
        help="hold out this fraction of images (scored images) or pairs (synthetic set, default 0.1) in an eval file",
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per judge call (default 8)")
    p.add_argument("--n", type=int, default=None, help="synthetic set: number of pairs (default 200)")
    p.add_argument("--size", type=int, default=None, help="synthetic set: image side in pixels (default 112)")
    p.add_argument("--edits", default=None, help=f"synthetic set: comma-separated {', '.join(EDITS)} (default all)")
    p.add_argument("--seed", type=int, default=0)


def cmd_make_pairs(args: argparse.Namespace) -> int:
    """Write a pairs file from scored images (--candidates / --images), else the synthetic preference set."""
    if args.candidates is None and args.images is None:
        return make_synthetic_set(args)
    return make_scored_pairs(args)


def make_synthetic_set(args: argparse.Namespace) -> int:
    """Write the synthetic preference set (real photos vs visibly edited copies)."""
    from ..training.synthetic import EDITS, make_synthetic_pairs

    given = [_flag(k) for k in SCORED_ONLY if getattr(args, k) is not None]
    if given:
        raise CLIError(f"{', '.join(given)}: only for scored images; pass --candidates DIR or --images DIR too")
    n, size = 200 if args.n is None else args.n, 112 if args.size is None else args.size
    edits = tuple(e.strip() for e in args.edits.split(",")) if args.edits else EDITS
    bad = [e for e in edits if e not in EDITS]
    if bad:
        raise CLIError(f"--edits: unknown edit(s) {', '.join(bad)}; choose from {', '.join(EDITS)}")
    if n < 2 or size < 28:
        raise CLIError("--n must be at least 2 and --size at least 28")
    fraction = 0.1 if args.eval_fraction is None else args.eval_fraction
    if not 0 <= fraction < 1 or n - round(n * fraction) < 1:
        raise CLIError(f"--eval-fraction must be in [0, 1) and leave at least one training pair, got {fraction}")
    check_writable_folder(args.out, "--out")
    pairs = make_synthetic_pairs(args.out, n=n, size=size, edits=edits, seed=args.seed, eval_fraction=fraction)
    held = pairs.parent / "eval.jsonl"
    print(f"{pairs}" + (f" and {held} (held out)" if round(n * fraction) else ""))
    return 0


def make_scored_pairs(args: argparse.Namespace) -> int:
    """Validate every flag and input, score the images, pair them and write the pairs, eval and scores files."""
    from ..training.labelling import LabelError, split_by_image

    out = check_flags(args)
    items = read_candidates(Path(args.candidates)) if args.candidates else read_folder(Path(args.images), args.prompt)
    judge = None
    if args.judge:
        judge = load_judge_flag(args.judge, items)
    elif args.scores == "candidates":
        check_candidate_scores(items, Path(args.candidates))
    else:
        apply_scores_file(items, Path(args.scores), Path(args.candidates or args.images))
    try:
        train, held = (
            split_by_image([i.prompt for i in items], args.eval_fraction, args.seed)
            if args.eval_fraction
            else (list(range(len(items))), [])
        )
    except LabelError as exc:
        raise CLIError(f"--eval-fraction: {exc}") from exc
    if held:
        check_pairable(items, train, "training", "use a smaller --eval-fraction")
        check_pairable(items, held, "held-out", "use a larger --eval-fraction")
    else:
        check_pairable(items, train, "", "give each prompt at least two images")
    if judge is not None:
        score_with_judge(judge, items, 8 if args.batch_size is None else args.batch_size)
    return write_outputs(args, out, items, train, held)


def check_flags(args: argparse.Namespace) -> Path:
    """The --out path, once every flag of scored-image labelling is consistent (nothing read yet)."""
    given = [_flag(k) for k in SYNTHETIC_ONLY if getattr(args, k) is not None]
    if given:
        raise CLIError(f"{', '.join(given)}: only for the synthetic set; leave out with --candidates / --images")
    if args.candidates and args.images:
        raise CLIError("pass --candidates DIR or --images DIR, not both")
    if args.images and not (args.prompt or "").strip():
        raise CLIError('--images needs --prompt "TEXT" (the prompt every image in the folder was made for)')
    if args.candidates and args.prompt is not None:
        raise CLIError("--prompt is for --images; candidates.jsonl already names each image's prompt")
    if (args.judge is None) == (args.scores is None):
        raise CLIError("pass one source of scores: --judge FILE.py:FUNC, --scores FILE.jsonl or --scores candidates")
    if args.scores == "candidates" and not args.candidates:
        raise CLIError("--scores candidates reads candidates.jsonl's scores; it needs --candidates DIR")
    if args.margin is not None and not args.margin >= 0:
        raise CLIError(f"--margin must be >= 0, got {args.margin}")
    if args.pairs_per_image is not None and args.pairs_per_image < 1:
        raise CLIError(f"--pairs-per-image must be at least 1, got {args.pairs_per_image}")
    if args.eval_fraction is not None and not 0 < args.eval_fraction < 1:
        raise CLIError(f"--eval-fraction must be between 0 and 1 (exclusive), got {args.eval_fraction}")
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.batch_size is not None and not args.judge:
        raise CLIError("--batch-size sets how many images a --judge call scores; it needs --judge")
    out = Path(args.out)
    if out.suffix.lower() != ".jsonl" or out.is_dir():
        raise CLIError(f"--out {str(out)!r}: pass a .jsonl file for the pairs (e.g. data/pairs.jsonl)")
    return out


def read_candidates(folder: Path) -> list[Item]:
    """The images listed in FOLDER/candidates.jsonl, each checked to exist."""
    table = folder / "candidates.jsonl"
    if not table.is_file():
        raise CLIError(
            f"--candidates {str(folder)!r} has no candidates.jsonl; pass a folder written by "
            "`rewarddance search --save-candidates`, or a plain folder with --images and --prompt"
        )
    items, seen = [], set()
    for n, row in read_jsonl(table, "--candidates"):
        where = f"--candidates {table} line {n}"
        if not isinstance(row.get("file"), str) or not isinstance(row.get("prompt"), str):
            raise CLIError(f'{where}: each row needs "file" and "prompt" strings')
        path = folder / row["file"]
        if not path.is_file():
            raise CLIError(f"{where}: image {str(path)!r} does not exist")
        if row["file"] in seen:
            raise CLIError(f"{where}: {row['file']!r} is listed twice; list every image once")
        seen.add(row["file"])
        items.append(Item(path, row["file"], row["prompt"], row.get("score")))
    if not items:
        raise CLIError(f"--candidates {table}: no rows")
    return items


def read_folder(folder: Path, prompt: str) -> list[Item]:
    """Every image or video under `folder`, all for `prompt`."""
    files = list_media(folder)
    if not files:
        raise CLIError(f"--images {str(folder)!r} holds no image or video files")
    return [Item(f, f.relative_to(folder).as_posix(), prompt) for f in files]


def read_jsonl(path: Path, flag: str) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line, with one clear error per bad line."""
    try:
        return json_objects(path.read_text(encoding="utf-8"), f"{flag} {path}")
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def load_judge_flag(spec: str, items: list[Item]):
    """The --judge function, once every image is known to be a still image it can score."""
    from ..media import is_video_path
    from ..rewards.python_judge import JudgeError, load_judge

    videos = [i.name for i in items if is_video_path(i.path)]
    if videos:
        raise CLIError(
            f"--judge scores still images; {len(videos)} input(s) are videos (e.g. {videos[0]}): "
            "score them with --scores FILE.jsonl instead"
        )
    try:
        return load_judge(spec)
    except JudgeError as exc:
        raise CLIError(f"--judge: {exc}") from exc


def check_candidate_scores(items: list[Item], folder: Path) -> None:
    """Refuse candidates without a finite "score" (for --scores candidates)."""
    from ..training.labelling import is_finite_number

    bad = [i.name for i in items if not is_finite_number(i.score)]
    if bad:
        raise CLIError(
            f"--scores candidates: {len(bad)} row(s) of {folder / 'candidates.jsonl'} have no numeric score "
            f"(e.g. {bad[0]}); score them with --judge or --scores FILE.jsonl"
        )


def apply_scores_file(items: list[Item], path: Path, folder: Path) -> None:
    """Set each item's score from a JSONL file of {"file", "score"} rows (files relative to `folder`)."""
    from ..training.labelling import is_finite_number

    if not path.is_file():
        raise CLIError(f'--scores {str(path)!r} does not exist; pass a JSONL file of {{"file", "score"}} rows')
    by_path = {i.path.resolve(): i for i in items}
    scored: set[Path] = set()
    for n, row in read_jsonl(path, "--scores"):
        where = f"--scores {path} line {n}"
        if not isinstance(row.get("file"), str) or not is_finite_number(row.get("score")):
            raise CLIError(f'{where}: each row needs "file" (a string) and "score" (a finite number)')
        key = _score_key(row["file"], folder, path.parent, by_path)
        if key is None:
            raise CLIError(f"{where}: {row['file']!r} is not one of the images in {str(folder)!r}")
        if key in scored:
            raise CLIError(f"{where}: {row['file']!r} is scored twice; keep one row per image")
        scored.add(key)
        by_path[key].score = float(row["score"])
    missing = [i.name for i in items if i.score is None]
    if missing:
        raise CLIError(f"--scores {path}: {len(missing)} image(s) have no score (e.g. {missing[0]}); score every image")


def _score_key(name: str, folder: Path, scores_dir: Path, known: dict) -> Path | None:
    """The image a score row names: relative to the image folder, else to the scores file (as
    <stem>.scores.jsonl writes it), or absolute; None when it names none of the images."""
    for base in (folder, scores_dir):
        key = (base / name).resolve()
        if key in known:
            return key
    return None


def check_pairable(items: list[Item], indices: list[int], side: str, hint: str) -> None:
    """Refuse a split in which no prompt has two images to pair."""
    from ..training.labelling import group_by_prompt

    groups = group_by_prompt([i.prompt for i in items], indices)
    if not any(len(g) >= 2 for g in groups.values()):
        raise CLIError(
            f"the {side + ' ' if side else ''}images ({len(indices)}) include no two of the same prompt, so no pair can be made; {hint}"
        )


def score_with_judge(judge, items: list[Item], batch_size: int) -> None:
    """Score every item with the judge, in batches."""
    from ..rewards.python_judge import JudgeError
    from ..training.labelling import score_images

    try:
        scores = score_images(judge, [str(i.path) for i in items], batch_size)
    except JudgeError as exc:
        raise CLIError(f"--judge: {exc}") from exc
    for item, score in zip(items, scores):
        item.score = score


def write_outputs(args: argparse.Namespace, out: Path, items: list[Item], train: list[int], held: list[int]) -> int:
    """Pair each split, write the scores, pairs and eval files, and print the summary."""
    from ..training.data import write_pairs
    from ..training.labelling import relative_to

    margin = 0.0 if args.margin is None else args.margin
    sides = [("pairs", out, train)] + ([("eval pairs", out.with_name(f"{out.stem}.eval.jsonl"), held)] if held else [])
    made = [
        pair_split(items, indices, margin, args.pairs_per_image or 1, args.seed, bool(args.keep_ties))
        for _, _, indices in sides
    ]
    scores_path = write_score_rows(out, items, set(held) if held else None)
    for (label, _, _), (pairs, ties) in zip(sides, made):
        if not pairs:
            raise CLIError(
                f"all {ties} {label} are ties (|score difference| <= --margin {margin}); lower --margin or pass "
                f"--keep-ties (the scores are in {scores_path})"
            )
    values = [i.score for i in items]
    source = f"--judge {args.judge}" if args.judge else f"--scores {args.scores}"
    print(f"make-pairs: {len(items)} images, scores {min(values):.4g} .. {max(values):.4g} ({source})")
    for (label, path, indices), (pairs, ties) in zip(sides, made):
        write_pairs(relative_to(pairs, path), path)
        tie_note = f"{ties} ties kept" if args.keep_ties else f"{ties} ties dropped"
        print(f"  {label}: {len(pairs)} written to {path} ({len(indices)} images, {tie_note})")
    print(f"  scores: {scores_path}")
    return 0


def write_score_rows(out: Path, items: list[Item], held: set[int] | None) -> Path:
    """<out stem>.scores.jsonl: every image's file (relative to it), prompt, score and, with a split, its side."""
    from ..training.labelling import relative_path, write_scores

    base = out.resolve().parent
    rows = [
        {"file": relative_path(str(i.path), base), "prompt": i.prompt, "score": i.score}
        | ({} if held is None else {"split": "eval" if n in held else "train"})
        for n, i in enumerate(items)
    ]
    return write_scores(out.with_name(f"{out.stem}.scores.jsonl"), rows)


def pair_split(
    items: list[Item], indices: list[int], margin: float, per_image: int, seed: int, keep_ties: bool
) -> tuple[list, int]:
    """(pairs, number of ties) for the images at `indices`; ties are left out unless `keep_ties`."""
    from ..training.labelling import pairs_from_scores

    chosen = [items[i] for i in indices]
    pairs = pairs_from_scores(
        [str(i.path.resolve()) for i in chosen],
        [i.prompt for i in chosen],
        [i.score for i in chosen],
        margin,
        per_image,
        seed,
    )
    ties = sum(p.tie for p in pairs)
    return (pairs if keep_ties else [p for p in pairs if not p.tie]), ties


def _flag(dest: str) -> str:
    """The command-line spelling of an argparse destination."""
    return "--" + dest.replace("_", "-")


COMMANDS = (
    Command(
        "make-pairs",
        "write preference pairs from scored images (a judge or scores), or a synthetic set from sample photos",
        add_make_pairs_arguments,
        cmd_make_pairs,
    ),
)
