"""`rewarddance models`: the memory a judge needs, read before loading it (backend/memory_estimate.py) — weights
for a dtype and quantization, activations for a pixel budget and a forward's token budget."""

from __future__ import annotations

import argparse
import json

from ..memory_estimate import MemoryEstimate, estimate_memory, format_bytes
from ..vlm.quantization import QUANTIZATIONS
from .checks import check_model_source
from .command import Command
from .errors import CLIError
from .model_options import DEFAULT_MODEL

DEFAULT_MAX_PIXELS = 28 * 28 * 1280  # the Qwen checkpoints' own image budget
DEFAULT_BATCH_TOKENS = 16384  # the GPU default of one forward's token budget
ESTIMATE_DTYPES = ("bf16", "fp16", "fp32")


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance models`."""
    p.add_argument(
        "models",
        nargs="*",
        default=[DEFAULT_MODEL],
        help=f"checkpoint directories or hub ids already in the hub cache (default {DEFAULT_MODEL}); nothing is "
        "downloaded or loaded",
    )
    p.add_argument("--dtype", default="bf16", help=f"{', '.join(ESTIMATE_DTYPES)} (default bf16)")
    p.add_argument(
        "--quantize",
        dest="quantization",
        default="all",
        help=f"{', '.join(QUANTIZATIONS)} or all (default: one row each)",
    )
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"pixels per image (default {DEFAULT_MAX_PIXELS})"
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=DEFAULT_BATCH_TOKENS,
        help=f"tokens of one forward, for the KV cache and activations (default {DEFAULT_BATCH_TOKENS})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")


def check_models_args(args: argparse.Namespace) -> list[str]:
    """The quantizations to list, after checking every flag (CLIError naming the flag)."""
    for model in args.models:
        check_model_source(model, "model")
    if args.dtype not in ESTIMATE_DTYPES:
        raise CLIError(f"--dtype must be one of {', '.join(ESTIMATE_DTYPES)}, got {args.dtype!r}")
    if args.quantization != "all" and args.quantization not in QUANTIZATIONS:
        raise CLIError(f"--quantize must be one of {', '.join(QUANTIZATIONS)} or all, got {args.quantization!r}")
    for flag, value in (("--max-pixels", args.max_pixels), ("--max-batch-tokens", args.max_batch_tokens)):
        if value <= 0:
            raise CLIError(f"{flag} must be a positive number, got {value}")
    return list(QUANTIZATIONS) if args.quantization == "all" else [args.quantization]


def estimate_row(model: str, estimate: MemoryEstimate) -> dict:
    """One output row: the model and its estimate."""
    return {"model": model, **estimate.as_dict()}


def format_row(row: dict) -> str:
    """One table line: model, dtype, quantization, parameters, weights, activations, total, source."""
    params = format_count(row["parameters"])
    return (
        f"{row['model']:<40} {row['dtype']:<5} {row['quantization']:<5} {params:>9} "
        f"{format_bytes(row['weight_bytes']):>10} {format_bytes(row['activation_bytes']):>10} "
        f"{format_bytes(row['total_bytes']):>10}  {row['source']}"
    )


def format_count(n: int | None) -> str:
    """'8.29B' / '95.1M' parameters; 'unknown' for None."""
    if n is None:
        return "unknown"
    return f"{n / 1e9:.2f}B" if n >= 10**9 else f"{n / 1e6:.2f}M"


def cmd_models(args: argparse.Namespace) -> int:
    """Print the memory estimate of each model for the dtype, quantizations and budgets given."""
    quantizations = check_models_args(args)
    rows = [
        estimate_row(m, estimate_memory(m, args.dtype, q, args.max_pixels, args.max_batch_tokens))
        for m in args.models
        for q in quantizations
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(
            f"{'model':<40} {'dtype':<5} {'quant':<5} {'params':>9} {'weights':>10} {'activations':>10} "
            f"{'total':>10}  source"
        )
        for row in rows:
            print(format_row(row))
        if any(r["source"] == "unknown" for r in rows):
            print("unknown: a hub id whose config.json is not in the hub cache; download it or pass its folder")
    return 0


COMMANDS = (
    Command(
        "models",
        "estimate a judge's memory (weights and activations) for a dtype, quantization and pixel budget",
        add_models_arguments,
        cmd_models,
    ),
)
