"""`rewarddance rerank --ray`: the same scoring options as local rerank, over a folder or a manifest table, on a
Ray cluster (backend/integrations/ray_rerank.py); results go to a folder of shards that a rerun resumes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..integrations.ray_manifest import MANIFEST_SUFFIXES, folder_rows
from ..integrations.ray_shards import SHARD_FORMATS
from .checks import IMAGE_SUFFIXES, check_text, check_writable_file, check_writable_folder, either
from .errors import CLIError
from .io import list_media
from .model_options import DEFAULT_MODEL, check_model_args, scoring_overrides

RAY_FLAGS = {  # dest -> flag, of the flags that only mean something with --ray
    "actors": "--actors",
    "gpus_per_actor": "--gpus-per-actor",
    "batch_size": "--batch-size",
    "shard_rows": "--shard-rows",
    "shard_format": "--shard-format",
}


def add_ray_options(p: argparse.ArgumentParser) -> None:
    """The flags of `rerank --ray`."""
    g = p.add_argument_group('ray (score on a Ray cluster; pip install -e ".[ray]")')
    g.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|ADDRESS",
        help="score with Ray Data: `auto` (the default) joins the cluster `ray start` runs on this machine or "
        "$RAY_ADDRESS, else starts a local one; ADDRESS joins that cluster (e.g. HEAD_IP:6379). DIRECTORY may "
        "then also be a manifest (.parquet, .jsonl, .csv: a path column, optional id, prompt, reference, criteria "
        "columns) and --out is a folder of result shards; rows already in it are skipped",
    )
    g.add_argument("--actors", type=int, default=None, help="actors, each holding one model (default 1)")
    g.add_argument(
        "--gpus-per-actor", type=float, default=None, help="GPUs each actor reserves (default 0; 0.5 = two per GPU)"
    )
    g.add_argument("--batch-size", type=int, default=None, help="rows per actor call (default 16)")
    g.add_argument("--shard-rows", type=int, default=None, help="rows per output shard (default 1024)")
    g.add_argument("--shard-format", default=None, choices=SHARD_FORMATS, help="result shard format (default parquet)")


def check_no_ray_flags(args: argparse.Namespace) -> None:
    """Refuse the --ray-only flags in a local rerank."""
    given = [flag for dest, flag in RAY_FLAGS.items() if getattr(args, dest) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} only work(s) with --ray; add --ray or drop them")


def check_ray_args(args: argparse.Namespace) -> None:
    """The cheap checks of `rerank --ray`'s flags, before Ray starts or anything is loaded."""
    if args.backend:
        raise CLIError("--ray loads the model in every actor; --backend scores through one server: choose one")
    if args.reasons:
        raise CLIError("--reasons is not written to --ray's result shards; drop it (or rerank locally)")
    if not args.out:
        raise CLIError("--ray needs --out FOLDER, where the result shards go (a rerun resumes from them)")
    check_writable_folder(args.out, "--out")
    check_text(args.prompt, "--prompt")
    check_model_args(args)
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer, got {args.top_k}")
    if args.reference is not None and not Path(args.reference).is_file():
        raise CLIError(f"--reference {args.reference!r} does not exist; pass the reference image")
    check_writable_file(args.sheet, "--sheet", IMAGE_SUFFIXES)  # redrawn by every run (a rerun resumes)
    if args.sheet and args.reference and Path(args.sheet).resolve() == Path(args.reference).resolve():
        raise CLIError(f"--sheet {args.sheet!r} is an input of this command; choose another --sheet")


def ray_source(args: argparse.Namespace) -> str | list[dict]:
    """A folder's rows (prompts from --prompt / --prompts, checked here) or the manifest's path."""
    from .scoring import prompt_texts

    source = Path(args.directory)
    if source.is_dir():
        if args.prompt is None and args.prompts is None:
            raise CLIError("pass --prompt TEXT or --prompts FILE")
        files = list_media(source)
        if not files:
            raise CLIError(f"no images or videos found in {str(source)!r}")
        return folder_rows(source, args.prompt, prompt_texts(files, source, args))
    if source.suffix.lower() not in MANIFEST_SUFFIXES:
        raise CLIError(
            f"{args.directory!r}: with --ray, pass a folder or a manifest table ({either(MANIFEST_SUFFIXES)})"
        )
    if not source.is_file():
        raise CLIError(f"manifest {args.directory!r} does not exist; check the path")
    if args.prompts:
        raise CLIError("--prompts is for a folder; a manifest carries its prompts in a 'prompt' column")
    return str(source)


def cmd_ray_rerank(args: argparse.Namespace) -> int:
    """Score on Ray into --out's shards, print what was done, and the top-k (and --sheet) when asked."""
    from ..integrations.ray_rerank import RayOptions, ray_rerank
    from ..integrations.ray_shards import read_results
    from ..reward_model import LOADING_FIELDS
    from .scoring import report_ranking

    check_ray_args(args)
    source = ray_source(args)
    options = RayOptions(
        address=None if args.ray == "auto" else args.ray,
        actors=1 if args.actors is None else args.actors,
        gpus_per_actor=0.0 if args.gpus_per_actor is None else args.gpus_per_actor,
        batch_size=16 if args.batch_size is None else args.batch_size,
        shard_rows=1024 if args.shard_rows is None else args.shard_rows,
        shard_format=args.shard_format or "parquet",
    )
    summary = ray_rerank(
        source,
        args.out,
        args.model or DEFAULT_MODEL,
        prompt=args.prompt,
        mode=args.mode,
        reference=args.reference,
        options=options,
        loading={name: getattr(args, name) for name in LOADING_FIELDS},
        scoring=scoring_overrides(args),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"rewarddance: scored {summary.scored}, unreadable {summary.failed}, already in --out {summary.skipped}: "
        f"{summary.shards} new shard(s) in {summary.out}",
        file=sys.stderr,
    )
    rows = read_results(summary.out)
    if args.top_k or args.sheet:
        report_ranking([r for r in rows if r["score"] is not None], [], args)
    return 0 if any(r["score"] is not None for r in rows) or not rows else 1
