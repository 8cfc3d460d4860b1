"""`rewarddance search`: reward-guided noise search over a diffusers pipeline or a tiny generator directory;
writes the best image, and with `--save-candidates DIR` every candidate as it is scored."""

from __future__ import annotations

import argparse
import json

import torch

from ..devices import DTYPE_CHOICES, DTYPES, resolve_device_and_dtype
from ..search.algorithms import ALGORITHMS
from ..search.pruning import DEFAULT_KEEP_FRACTION, Pruning, pruning_for
from ..search.tree import (
    DEFAULT_CHILDREN,
    DEFAULT_ETA,
    DEFAULT_EXPLORATION,
    DEFAULT_TEMPERATURE,
    tree_options,
)
from .checks import (
    IMAGE_SUFFIXES,
    check_model_source,
    check_text,
    check_writable_file,
    check_writable_folder,
    parse_criteria,
)
from .command import Command
from .errors import CLIError
from .io import CANDIDATE_FIELDS, CANDIDATES_FILE, CandidateWriter, check_new_folder, write_search_output
from .model_options import DEFAULT_MODEL, add_criteria_flags, check_quantize_flag


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance search`."""
    p.add_argument(
        "--pipeline",
        required=True,
        help="diffusers pipeline directory or hub id (SD 1.x/2.x, SDXL, SD3, Flux, Wan), or a tiny generator "
        "directory (`rewarddance tiny-generator`: unconditional, fixed size, no --guidance/--height/--width/--frames)",
    )
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--algorithm", default="search_over_paths", help=", ".join(ALGORITHMS))
    p.add_argument("--budget", type=int, default=64, help="denoiser calls to spend")
    p.add_argument("--steps", type=int, default=20, help="sampling steps per image")
    p.add_argument(
        "--prune-at",
        default=None,
        metavar="STEP|FRACTION",
        help="early pruning (best_of_n, random_search): sample every candidate to this step (an index 1 .. "
        "steps - 1, or a fraction of --steps such as 0.25), score its predicted clean image, finish only the top "
        "--keep-fraction; more candidates fit the budget, pruned ones cost the prune step + 1 denoiser calls",
    )
    p.add_argument(
        "--keep-fraction",
        type=float,
        default=None,
        help=f"with --prune-at: the fraction of candidates finished, in (0, 1], at least one "
        f"(default {DEFAULT_KEEP_FRACTION}; 1 is plain search)",
    )
    add_tree_arguments(p)
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="CFG scale (Flux: its guidance embedding); default per family: SD 7.5, SDXL 5, SD3 7, Flux 3.5, Wan 5",
    )
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="video frames (Wan; default 81)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward-model", default=DEFAULT_MODEL, help="reward model checkpoint or hub id")
    add_criteria_flags(p)
    p.add_argument("--dtype", default="auto", help=f"{', '.join(DTYPE_CHOICES)} (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument(
        "--quantize",
        dest="quantization",
        default="none",
        help="the reward model's quantization: none, int8, nf4 (bitsandbytes; no gradients, so not with "
        "noise_gradient)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--out", default="best.png", help="where to write the best image")
    p.add_argument("--json", action="store_true", help="print the score and every candidate as JSON")
    p.add_argument(
        "--save-candidates",
        default=None,
        metavar="DIR",
        help=f"a new (or empty) directory: every scored candidate is written there as it is scored, NNNNN.png "
        f"(videos: NNNNN.webp) plus one {CANDIDATES_FILE} row each: "
        + "; ".join(f"{k}: {v}" for k, v in CANDIDATE_FIELDS.items()),
    )


TREE_FLAGS = {  # flag: (tree_search keyword, type, help)
    "--children": ("children", int, f"the most children of a tree node (default {DEFAULT_CHILDREN})"),
    "--root-children": (
        "root_children",
        int,
        "the initial seeds at the tree's root (default max(--children, budget / (4 steps)))",
    ),
    "--eta": ("eta", float, f"the share of fresh noise in a branching step, in (0, 1] (default {DEFAULT_ETA})"),
    "--temperature": (
        "temperature",
        float,
        f"of the soft-Bellman value backup, > 0 (small: the children's max; large: their mean; default "
        f"{DEFAULT_TEMPERATURE})",
    ),
    "--exploration": (
        "exploration",
        float,
        f"weight of the UCT bonus in the descent, >= 0, in units of the leaf-score spread (default "
        f"{DEFAULT_EXPLORATION}: greedy)",
    ),
}


def add_tree_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of --algorithm tree (diffusion tree search, DTS*)."""
    for flag, (dest, kind, text) in TREE_FLAGS.items():
        p.add_argument(flag, dest=f"tree_{dest}", type=kind, default=None, help=f"--algorithm tree: {text}")


def tree_kwargs(args: argparse.Namespace) -> dict:
    """The checked tree-search keywords given on the command line (empty when none), with messages naming flags."""
    given = {flag: getattr(args, f"tree_{dest}") for flag, (dest, _, _) in TREE_FLAGS.items()}
    given = {flag: value for flag, value in given.items() if value is not None}
    if given and args.algorithm != "tree":
        raise CLIError(f"{next(iter(given))} works with --algorithm tree, not {args.algorithm}")
    kwargs = {TREE_FLAGS[flag][0]: value for flag, value in given.items()}
    try:
        tree_options(args.steps, args.budget, **kwargs)
    except ValueError as exc:
        dest = str(exc).split(" ", 1)[0]
        flag = next((f for f, (d, _, _) in TREE_FLAGS.items() if d == dest), None)
        raise CLIError(str(exc) if flag is None else flag + str(exc)[len(dest) :]) from exc
    return kwargs


def check_search_args(args: argparse.Namespace) -> None:
    """The cheap checks of search's flags, before any pipeline or model is loaded."""
    if args.algorithm not in ALGORITHMS:
        raise CLIError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {args.algorithm!r}")
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    if args.budget < args.steps:
        raise CLIError(
            f"--budget ({args.budget} denoiser calls) must cover at least one sample of --steps {args.steps}"
        )
    search_pruning(args)
    tree_kwargs(args)
    if not args.out.lower().endswith(IMAGE_SUFFIXES):
        raise CLIError(
            f"--out must be an image file name (.png, .jpg, .webp; videos are written as an animated "
            f".webp), got {args.out!r}"
        )
    check_writable_file(args.out, "--out")
    check_text(args.prompt, "--prompt")
    parse_criteria(args.criteria, args.criteria_text)
    if args.save_candidates is not None:
        check_new_folder(args.save_candidates, "--save-candidates")
        check_writable_folder(args.save_candidates, "--save-candidates")
    check_model_source(args.pipeline, "--pipeline")
    check_model_source(args.reward_model, "--reward-model")
    check_quantize_flag(args.quantization)
    if args.quantization != "none" and args.algorithm == "noise_gradient":
        raise CLIError(
            f"--quantize {args.quantization}: noise_gradient needs the reward's gradient, which a quantised judge "
            "cannot give; use --quantize none or another --algorithm"
        )


PRUNABLE = ("best_of_n", "random_search")


def parse_prune_at(text: str) -> int | float:
    """--prune-at as a step index ("5") or a fraction of the steps ("0.25")."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise CLIError(
            f"--prune-at must be a step index (e.g. 2) or a fraction of --steps (e.g. 0.25), got {text!r}"
        ) from None


def search_pruning(args: argparse.Namespace) -> Pruning | None:
    """The checked --prune-at / --keep-fraction (None: no pruning), with messages naming the flags."""
    if args.prune_at is None and args.keep_fraction is None:
        return None
    if args.algorithm not in PRUNABLE:
        flag = "--prune-at" if args.prune_at is not None else "--keep-fraction"
        raise CLIError(f"{flag} works with --algorithm {' or '.join(PRUNABLE)}, not {args.algorithm}")
    prune_at = None if args.prune_at is None else parse_prune_at(args.prune_at)
    try:
        return pruning_for(prune_at, args.keep_fraction, args.steps)
    except ValueError as exc:
        raise CLIError(str(exc).replace("prune_at", "--prune-at").replace("keep_fraction", "--keep-fraction")) from exc


def pruning_kwargs(args: argparse.Namespace) -> dict:
    """prune_at / keep_fraction for the search function (empty without --prune-at)."""
    if search_pruning(args) is None:
        return {}
    return {"prune_at": parse_prune_at(args.prune_at), "keep_fraction": args.keep_fraction}


def dtype_name(dtype: torch.dtype) -> str:
    """The short name (bf16, fp16 or fp32) of a torch dtype, as load_pipeline takes it."""
    return next(name for name in DTYPE_CHOICES if DTYPES.get(name) == dtype)


def cmd_search(args: argparse.Namespace) -> int:
    """Noise search over a diffusers pipeline or a tiny generator with a reward model; write the best image.

    With --save-candidates DIR, every candidate of the search history is saved as DIR/NNNNN.png (videos: an
    animated NNNNN.webp) and one row of DIR/candidates.jsonl, written as it is scored:
    {"file", "prompt", "score", "round", "index", "seed", "algorithm", "denoiser_calls", "scorer_calls"}
    (see CANDIDATE_FIELDS). The score is the one of the float image before its 8-bit PNG rounding.
    """
    from dataclasses import asdict

    from ..generators.diffusers_adapter import generator_for, load_pipeline
    from ..reward_model import RewardModel
    from ..rewards import ModelReward

    device, dtype = resolve_device_and_dtype(args.device, args.dtype)
    check_search_args(args)
    try:
        pipeline = load_pipeline(args.pipeline, device, dtype_name(dtype), quiet=args.quiet)
        gen = generator_for(pipeline, args.prompt, args.negative, args.guidance, args.height, args.width, args.frames)
    except ValueError as exc:
        raise CLIError(f"--pipeline: {exc}") from exc
    rm = RewardModel.from_pretrained(args.reward_model, dtype=dtype, device=device, quantization=args.quantization)
    criteria = parse_criteria(args.criteria, args.criteria_text)
    reward = ModelReward(rm, args.prompt, options={"criteria": criteria} if criteria else {})
    on_candidate = None
    if args.save_candidates is not None:
        on_candidate = CandidateWriter(args.save_candidates, args.prompt, args.seed, args.algorithm)
    result = ALGORITHMS[args.algorithm](
        gen,
        reward,
        args.steps,
        args.budget,
        seed=args.seed,
        on_candidate=on_candidate,
        **pruning_kwargs(args),
        **tree_kwargs(args),
    )
    write_search_output(result.image[0], args.out)
    report = {
        "score": result.score,
        "denoiser_calls": result.denoiser_calls,
        "scorer_calls": result.scorer_calls,
        "out": args.out,
        "history": [asdict(c) for c in result.history],
        "early": [asdict(c) for c in result.early],  # --prune-at: every candidate scored at the pruning step
        "candidates": args.save_candidates,
        "seconds": result.seconds,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{args.algorithm}: best score {result.score:.6f} of {len(result.history)} candidates, "
            f"{result.denoiser_calls} denoiser calls"
            + (f" ({len(result.early)} screened at the pruning step)" if result.early else "")
            + f"; wrote {args.out}"
            + (f" and {len(result.history)} candidates to {args.save_candidates}" if args.save_candidates else "")
        )
    return 0


COMMANDS = (
    Command(
        "search",
        "reward-guided noise search over a diffusers pipeline or a tiny generator",
        add_search_arguments,
        cmd_search,
    ),
)
