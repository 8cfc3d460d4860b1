"""`rewarddance score` (files in input order) and `rewarddance rerank` (a folder, ranked, resumable; `--ray`:
backend/cli/ray_rerank.py)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ..ranking import ranking_order
from ..run_log import writing
from .checks import IMAGE_SUFFIXES, check_text, check_writable_file
from .command import Command
from .errors import CLIError
from .io import append_rows, list_media, read_prompts_file, read_results, rewrite_rows
from .model_options import DEFAULT_MODEL, add_model_options, check_model_args, load_reward_model, scoring_overrides

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

    check_text(args.prompt, "--prompt")
    check_model_args(args)
    for f in args.files:
        if Path(f).is_dir():
            raise CLIError(f"{f!r} is a directory; `rewarddance rerank {f} --prompt ...` scores and ranks a folder")
    visuals = [load_visual_file(f) for f in args.files]
    rm = load_reward_model(args)
    result = rm.score(visuals, args.prompt, reasons=args.reasons)
    rows = [{"path": f, "score": s} for f, s in zip(args.files, result.scores)]
    if result.reasons is not None:
        for row, reason in zip(rows, result.reasons):
            row["reasons"] = reason
    if getattr(result, "spread", None) is not None:
        for row, spread in zip(rows, result.spread):
            row["spread"] = spread
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['score']:.6f}\t{row['path']}")
    return 0


def add_rerank_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance rerank`."""
    p.add_argument(
        "directory", help="folder of images and videos (searched recursively); with --ray also a manifest table"
    )
    p.add_argument("--prompt", default=None, help="prompt shared by all files")
    p.add_argument("--prompts", default=None, help="per-file prompts: .jsonl {file,prompt}, .json, .csv or .tsv")
    p.add_argument("--mode", default="pointwise", choices=RERANK_MODES)
    p.add_argument("--reference", default=None, help="reference image for --mode pairwise")
    p.add_argument("--top-k", type=int, default=None, help="how many to print and draw (default all)")
    p.add_argument("--out", default=None, help="write every score to results.jsonl or results.csv")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep --out's rows (refused if they were scored with another model or scoring settings; a file whose "
        "content or prompt changed, and a row cut short by an interrupted run, is rescored) and append the rest",
    )
    p.add_argument("--sheet", default=None, help="write a contact sheet PNG of the top-k with scores drawn on")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --sheet, or an existing --out without --resume (--resume redraws the sheet of the "
        "run it continues; an input image, the --reference or the --prompts file is never overwritten)",
    )
    add_model_options(p)
    from .ray_rerank import add_ray_options

    add_ray_options(p)


def prompt_for(path: Path, root: Path, args: argparse.Namespace, prompts: dict[str, str] | None) -> str:
    """The prompt of one file: from --prompts (by relative path, name or stem), else --prompt."""
    if prompts:
        for key in (str(path.relative_to(root)), path.name, path.stem):
            if key in prompts:
                return prompts[key]
    if args.prompt is None:
        raise CLIError(f"no prompt for {path.name}: add it to --prompts or pass --prompt")
    return args.prompt


def prompt_texts(files: list[Path], root: Path, args: argparse.Namespace) -> dict[Path, str]:
    """Every file's prompt, checked (none missing, none empty) before anything is loaded."""
    prompts = read_prompts_file(Path(args.prompts)) if args.prompts else None
    texts = {f: prompt_for(f, root, args, prompts) for f in files}
    empty = next((f for f, text in texts.items() if not str(text).strip()), None)
    if empty is not None:
        raise CLIError(f"--prompts: the prompt of {empty.name} is empty; give every file a prompt")
    return texts


def check_rerank_args(args: argparse.Namespace) -> None:
    """The cheap checks of rerank's flags, before any file or model is loaded."""
    if args.prompt is None and args.prompts is None:
        raise CLIError("pass --prompt TEXT or --prompts FILE")
    check_text(args.prompt, "--prompt")
    check_model_args(args)
    if args.mode == "pairwise" and not args.reference:
        raise CLIError("--mode pairwise needs --reference IMAGE (the image every candidate is compared to)")
    check_writable_file(args.out, "--out", (".jsonl", ".csv"))
    check_writable_file(args.sheet, "--sheet", IMAGE_SUFFIXES)
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer, got {args.top_k}")
    check_not_input(args.out, "--out", [args.prompts, args.reference])
    check_not_input(args.sheet, "--sheet", [args.prompts, args.reference])
    if args.out and Path(args.out).exists() and not (args.resume or args.overwrite):
        raise CLIError(
            f"{str(Path(args.out))!r} exists; pass --resume to continue it, --overwrite to replace it, or choose "
            "another --out"
        )


def check_not_input(path: str | None, flag: str, inputs: list[str | None]) -> None:
    """Refuse an output path that names one of the command's input files (--prompts, --reference)."""
    if path is None:
        return
    target = Path(path).expanduser().resolve()
    for given in inputs:
        if given and Path(given).expanduser().resolve() == target:
            raise CLIError(f"{flag} {path!r} is an input of this command; choose another {flag}")


def check_not_ranked(path: str | None, flag: str, files: list[Path], root: Path) -> None:
    """Refuse an output path that is one of the media files being ranked (they are never overwritten)."""
    if path is None:
        return
    target = Path(path).expanduser().resolve()
    if any(f.resolve() == target for f in files):
        raise CLIError(
            f"{flag} {path!r} is one of the images being ranked in {str(root)!r} and is never overwritten; choose a "
            "path outside that folder"
        )


def cmd_rerank(args: argparse.Namespace) -> int:
    """Score every image/video in a folder, write results, print and draw the top-k (with --ray: on Ray)."""
    from ..media import to_visual
    from .ray_rerank import check_no_ray_flags, cmd_ray_rerank

    if args.ray is not None:
        return cmd_ray_rerank(args)
    check_no_ray_flags(args)
    root = Path(args.directory)
    check_rerank_args(args)
    if root.is_file():
        raise CLIError(
            f"{args.directory!r} is a file; rerank takes a folder (`rewarddance score FILE ...` scores files)"
        )
    if not root.is_dir():
        raise CLIError(f"folder {args.directory!r} does not exist; check the path")
    files = list_media(root)
    if not files:
        raise CLIError(f"no images or videos found in {str(root)!r}")
    check_not_ranked(args.sheet, "--sheet", files, root)
    if args.sheet and Path(args.sheet).exists() and not (args.overwrite or args.resume):
        raise CLIError(
            f"--sheet {args.sheet!r} exists; pass --overwrite to replace it (--resume redraws its own run's sheet) "
            "or choose another --sheet"
        )
    out = Path(args.out) if args.out else None
    texts = prompt_texts(files, root, args)
    settings = rerank_settings(args)
    done = resumable_rows(out, files, texts, settings) if args.resume else []
    if out is not None and out.exists() and not args.resume:  # --overwrite: this run's rows replace the old ones
        rewrite_rows(out, [])
    done_paths = {r["path"] for r in done}
    todo = [f for f in files if str(f) not in done_paths]
    reference = to_visual(args.reference, "--reference") if args.mode == "pairwise" else None
    if not todo:
        report_ranking(done, [], args)
        return 0
    rm = load_reward_model(args)
    rows, failed = score_files(rm, todo, texts, args, reference, out, settings)
    rows = done + rows
    if not rows:
        print(f"rewarddance: nothing could be scored ({len(failed)} unreadable file(s))", file=sys.stderr)
        return 1
    report_ranking(rows, failed, args)
    return 0


def rerank_settings(args: argparse.Namespace) -> str:
    """Everything besides the file and its prompt that decides a score, as canonical JSON (kept in every row)."""
    settings: dict[str, Any] = {
        "model": args.model or DEFAULT_MODEL,
        "backend": args.backend,
        "mode": args.mode,
        "reference": file_digest(Path(args.reference)) if args.mode == "pairwise" else None,
        "dtype": args.dtype,
        **{k: v for k, v in scoring_overrides(args).items() if k != "max_batch_tokens"},
        **{k: getattr(args, k) for k in ("min_pixels", "max_pixels", "video_max_pixels", "max_frames", "fps")},
    }
    return json.dumps(settings, sort_keys=True)


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (what --resume checks a scored file against)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise CLIError(f"cannot read {str(path)!r}: {exc.strerror}") from exc


def resumable_rows(out: Path | None, files: list[Path], texts: dict[Path, str], settings: str) -> list[dict]:
    """The rows of --out that still hold: same settings (else refuse, naming them), same file content and prompt
    (else the file is rescored and its old row dropped from --out)."""
    done, dropped = read_results(out)
    if not done and not dropped:
        return []
    mismatch = next((r for r in done if r.get("settings") != settings), None)
    if mismatch is not None:
        raise CLIError(f"--resume: {out} {settings_difference(mismatch.get('settings'), settings)}")
    current = {str(f): f for f in files}
    kept: dict[str, dict] = {}  # one row per file (the last one written)
    for row in done:
        f = current.get(row["path"])
        if f is not None and row.get("prompt") == texts[f] and row.get("sha") == file_digest(f):
            kept[row["path"]] = row
    if dropped:
        print(
            f"rewarddance: {out}: dropped {dropped} incomplete row(s) (cut short by an interrupted run); their files "
            "are rescored",
            file=sys.stderr,
        )
    changed = len(done) - len(kept)
    if changed:
        print(f"rewarddance: rescoring {changed} file(s) whose content or prompt changed", file=sys.stderr)
    if changed or dropped:
        rewrite_rows(out, list(kept.values()))
    return list(kept.values())


def settings_difference(saved: str | None, now: str) -> str:
    """Which scoring settings of an earlier run differ from this one's, in words."""
    if not saved:
        return "was written without its scoring settings (by an earlier version); write to a new --out"
    before, after = json.loads(saved), json.loads(now)
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    changes = ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in keys)
    return f"was scored with other settings ({changes}); its scores would not compare: choose another --out"


def score_files(
    rm: Any,
    todo: list[Path],
    texts_of: dict[Path, str],
    args: argparse.Namespace,
    reference: Any,
    out: Path | None,
    settings: str,
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
                    texts.append(texts_of[f])
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
            new = [
                {"path": str(f), "score": s, "prompt": t, "sha": file_digest(f), "settings": settings}
                for f, s, t in zip(chunk, scores, texts)
            ]
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

        kept = "the scores are in --out" if args.out else ""
        with writing(args.sheet, kept):
            write_contact_sheet([Path(r["path"]) for r in top], [r["score"] for r in top], Path(args.sheet))
        print(f"contact sheet: {args.sheet}")


COMMANDS = (
    Command("score", "score files and print one score per file, in input order", add_score_arguments, cmd_score),
    Command(
        "rerank",
        "score a folder of generations and rank them",
        add_rerank_arguments,
        cmd_rerank,
        interrupt_hint="the rows scored so far are kept in --out (run again with --resume)",
    ),
)
