"""`rewarddance tiny-model`: a tiny random-weight checkpoint of a registered family (tests, offline demos)."""

from __future__ import annotations

import argparse

from ..vlm.registry import FAMILIES
from .command import Command


def add_tiny_model_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance tiny-model`."""
    from ..vlm.tiny import SIZES

    p.add_argument("--family", required=True, choices=[f.name for f in FAMILIES])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=list(SIZES), default="s", help="xs / s / m: depth and MLP width (default s)")


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """Write a tiny random-weight checkpoint for tests and offline demos."""
    from ..vlm.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(args.family, args.out, seed=args.seed, size=args.size)
    print(path)
    return 0


COMMANDS = (
    Command(
        "tiny-model",
        "write a tiny random-weight checkpoint (tests, offline demo)",
        add_tiny_model_arguments,
        cmd_tiny_model,
    ),
)
