"""`rewarddance score` (files in input order) and `rewarddance rerank` (a folder, ranked, resumable)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..ranking import ranking_order
from .command import Command
from .errors import CLIError
from .io import append_rows, list_media, read_done, read_prompts_file
from .model_options import add_model_options, load_reward_model

CHUNK = 16  # files loaded and scored together by rerank (and appended to --out together)
RERANK_MODES = ("pointwise", "pairwise")


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance score`."""
    p.add_argument("files", nargs="+", help="image or video files")
    p.add_argument("--prompt", required=True, help="the generation prompt the files are judged against")
    p.add_argument("--json", action="store_true", help='print a JSON array of {"path", "score"}')
    add_model_options(p)


def cmd_score(args: argparse.Namespace) -> int:
    """Score files in input order and print one line (or a JSON array) per file."""
    from ..media import load_visual_file

    visuals = [load_visual_file(f) for f in args.files]
    rm = load_reward_model(args)
    result = rm.score(visuals, args.prompt, reasons=args.reasons)
    rows = [{"path": f, "score": s} for f, s in zip(args.files, result.scores)]
    if result.reasons is not None:
        for row, reason in zip(rows, result.reasons):
            row["reasons"] = reason
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['score']:.6f}\t{row['path']}")
    return 0


def add_rerank_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance rerank`."""
    p.add_argument("directory", help="folder of images and videos (searched recursively)")
    p.add_argument("--prompt", default=None, help="prompt shared by all files")
    p.add_argument("--prompts", default=None, help="per-file prompts: .jsonl {file,prompt}, .json, .csv or .tsv")
    p.add_argument("--mode", default="pointwise", choices=RERANK_MODES)
    p.add_argument("--reference", default=None, help="reference image for --mode pairwise")
    p.add_argument("--top-k", type=int, default=None, help="how many to print and draw (default all)")
    p.add_argument("--out", default=None, help="write every score to results.jsonl or results.csv")
    p.add_argument("--resume", action="store_true", help="skip files already in --out and append the rest")
    p.add_argument("--sheet", default=None, help="write a contact sheet PNG of the top-k with scores drawn on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)


def prompt_for(path: Path, root: Path, args: argparse.Namespace, prompts: dict[str, str] | None) -> str:
    """The prompt of one file: from --prompts (by relative path, name or stem), else --prompt."""
    if prompts:
        for key in (str(path.relative_to(root)), path.name, path.stem):
            if key in prompts:
                return prompts[key]
    if args.prompt is None:
        raise CLIError(f"no prompt for {path.name}: add it to --prompts or pass --prompt")
    return args.prompt


def check_rerank_args(args: argparse.Namespace) -> None:
    """The cheap checks of rerank's flags, before any file or model is loaded."""
    if args.prompt is None and args.prompts is None:
        raise CLIError("pass --prompt TEXT or --prompts FILE")
    if args.mode == "pairwise" and not args.reference:
        raise CLIError("--mode pairwise needs --reference IMAGE (the image every candidate is compared to)")
    if args.out and Path(args.out).suffix.lower() not in (".jsonl", ".csv"):
        raise CLIError(f"--out must end in .jsonl or .csv, got {args.out!r}")
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer, got {args.top_k}")
    if args.out and Path(args.out).exists() and not args.resume:
        raise CLIError(f"{str(Path(args.out))!r} exists; pass --resume to continue it or choose another --out")


def cmd_rerank(args: argparse.Namespace) -> int:
    """Score every image/video in a folder, write results, print and draw the top-k."""
    from ..media import to_visual

    root = Path(args.directory)
    files = list_media(root)
    if not files:
        raise CLIError(f"no images or videos found in {str(root)!r}")
    check_rerank_args(args)
    out = Path(args.out) if args.out else None
    prompts = read_prompts_file(Path(args.prompts)) if args.prompts else None
    done = read_done(out) if args.resume else []
    done_paths = {r["path"] for r in done}
    todo = [f for f in files if str(f) not in done_paths]
    reference = to_visual(args.reference, "--reference") if args.mode == "pairwise" else None
    rm = load_reward_model(args)
    rows, failed = score_files(rm, todo, root, args, prompts, reference, out)
    rows = done + rows
    if not rows:
        print(f"rewarddance: nothing could be scored ({len(failed)} unreadable file(s))", file=sys.stderr)
        return 1
    report_ranking(rows, failed, args)
    return 0


def score_files(
    rm: Any,
    todo: list[Path],
    root: Path,
    args: argparse.Namespace,
    prompts: dict[str, str] | None,
    reference: Any,
    out: Path | None,
) -> tuple[list[dict], list[str]]:
    """Score `todo` in chunks, appending each chunk's rows to `out`; (new rows, unreadable files)."""
    from tqdm import tqdm

    from ..media import MediaError, load_visual_file

    rows, failed = [], []
    with tqdm(total=len(todo), desc="scoring", unit="file", disable=args.quiet) as bar:
        for start in range(0, len(todo), CHUNK):
            chunk, visuals, texts = [], [], []
            for f in todo[start : start + CHUNK]:
                try:
                    visuals.append(load_visual_file(f))
                    texts.append(prompt_for(f, root, args, prompts))
                    chunk.append(f)
                except MediaError as exc:
                    failed.append(str(f))
                    tqdm.write(f"skipped {f}: {exc}", file=sys.stderr)
                    bar.update(1)
            if not chunk:
                continue
            if reference is not None:
                scores = rm.compare(visuals, reference, texts).scores
            else:
                scores = rm.score(visuals, texts).scores
            new = [{"path": str(f), "score": s, "prompt": t} for f, s, t in zip(chunk, scores, texts)]
            append_rows(out, new)
            rows.extend(new)
            bar.update(len(chunk))
    return rows, failed


def report_ranking(rows: list[dict], failed: list[str], args: argparse.Namespace) -> None:
    """Print the top-k ranks (and the skipped count), and draw the contact sheet if asked."""
    ranked = [rows[i] for i in ranking_order([r["score"] for r in rows])]
    top = ranked[: args.top_k or len(ranked)]
    for rank, row in enumerate(top, 1):
        print(f"{rank:>4}  {row['score']:.6f}  {row['path']}")
    if failed:
        print(f"rewarddance: {len(failed)} unreadable file(s) skipped", file=sys.stderr)
    if args.sheet:
        from ..contact_sheet import write_contact_sheet

        write_contact_sheet([Path(r["path"]) for r in top], [r["score"] for r in top], Path(args.sheet))
        print(f"contact sheet: {args.sheet}")


COMMANDS = (
    Command("score", "score files and print one score per file, in input order", add_score_arguments, cmd_score),
    Command("rerank", "score a folder of generations and rank them", add_rerank_arguments, cmd_rerank),
)
