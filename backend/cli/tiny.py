"""What tests and offline demos make: `rewarddance tiny-model` (a tiny random-weight reward model checkpoint of a
registered family), `rewarddance tiny-generator` (a tiny flow generator trained on photo crops) and
`rewarddance sample-photos` (real photographs to score, from scikit-image)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..vlm.registry import FAMILIES
from .checks import check_writable_folder
from .command import Command
from .errors import CLIError


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


def add_tiny_generator_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance tiny-generator`."""
    p.add_argument(
        "--out", required=True, help="output directory (new, empty, or a tiny generator directory to overwrite)"
    )
    p.add_argument("--size", type=int, default=16, help="image side in pixels (at least 8, a multiple of 4)")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=32, help="channels of the velocity network (at least 4)")


def check_tiny_generator_args(args: argparse.Namespace) -> None:
    """The checks of tiny-generator's flags, before any training."""
    from ..generators.tiny_checkpoint import is_tiny_generator

    if args.size < 8 or args.size % 4:
        raise CLIError(f"--size must be at least 8 and a multiple of 4 (e.g. 16), got {args.size}")
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    if args.width < 4:
        raise CLIError(f"--width must be at least 4, got {args.width}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out!r} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()) and not is_tiny_generator(out):
        raise CLIError(
            f"--out {args.out!r} is a non-empty directory that is not a tiny generator; pass a new or empty "
            "directory (an existing tiny generator directory is overwritten)"
        )


def cmd_tiny_generator(args: argparse.Namespace) -> int:
    """Train a tiny flow generator on photo crops and save it as a directory any --pipeline flag loads."""
    from ..generators.tiny_checkpoint import save_tiny_generator
    from ..generators.tiny_flow import train_tiny_flow

    check_tiny_generator_args(args)
    gen = train_tiny_flow(steps=args.steps, size=args.size, seed=args.seed, width=args.width)
    print(save_tiny_generator(gen, args.out, train_steps=args.steps, seed=args.seed, data="photo_crops"))
    return 0


def add_sample_photos_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance sample-photos`."""
    p.add_argument("--out", required=True, help="folder to write the photos to (created if needed)")


def cmd_sample_photos(args: argparse.Namespace) -> int:
    """Write scikit-image's bundled colour photos (no download, all different) as PNG files."""
    from ..sample_photos import write_sample_photos

    check_writable_folder(args.out, "--out")
    paths = write_sample_photos(args.out)
    print(f"{len(paths)} sample photos in {args.out}")
    return 0


COMMANDS = (
    Command(
        "tiny-model",
        "write a tiny random-weight checkpoint (tests, offline demo)",
        add_tiny_model_arguments,
        cmd_tiny_model,
    ),
    Command(
        "tiny-generator",
        "train and save a tiny flow generator for search and RL (tests, offline demo)",
        add_tiny_generator_arguments,
        cmd_tiny_generator,
    ),
    Command(
        "sample-photos",
        "write real sample photographs to a folder (offline demo)",
        add_sample_photos_arguments,
        cmd_sample_photos,
    ),
)
