"""`rewarddance tiny-model`: a tiny random-weight checkpoint of a registered family (tests, offline demos)."""

from __future__ import annotations

import argparse

from ..vlm.registry import FAMILIES
from .command import Command


def add_tiny_model_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance tiny-model`."""
    p.add_argument("--family", required=True, choices=[f.name for f in FAMILIES])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """Write a tiny random-weight checkpoint for tests and offline demos."""
    from ..vlm.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(args.family, args.out, seed=args.seed)
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
