"""Every subcommand, in the order `rewarddance --help` lists them, and the parser built from them (with the flags
every subcommand has: --quiet and --debug; and --version)."""

from __future__ import annotations

import argparse

from . import models, pairs, reward_training, scoring, search, serve, tiny, train
from .command import Command

COMMANDS: tuple[Command, ...] = (
    *scoring.COMMANDS,
    *serve.COMMANDS,
    *models.COMMANDS,
    *search.COMMANDS,
    *train.COMMANDS,
    *reward_training.COMMANDS,
    *pairs.COMMANDS,
    *tiny.COMMANDS,
)


class VersionAction(argparse.Action):
    """--version: print this package's version and the torch / transformers it runs on, then exit."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    """'rewarddance 0.1.0 (torch 2.13.0, transformers 5.24.0)'."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"rewarddance {installed('rewarddance')} (torch {installed('torch')}, transformers {installed('transformers')})"
    )


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """--quiet and --debug, which every subcommand takes."""
    p.add_argument("--quiet", action="store_true", help="no progress bars (ours and the libraries' loading bars)")
    p.add_argument("--debug", action="store_true", help="on failure, show the full traceback instead of one line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="rewarddance", description='Generative VLM reward models: P("yes") scores.')
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        add_common_flags(p)
        p.set_defaults(func=command.handler, interrupt_hint=command.interrupt_hint)
    return parser


def quiet_libraries() -> None:
    """Turn off the loading bars of transformers, huggingface_hub and diffusers (for --quiet)."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        return
    diffusers_logging.disable_progress_bar()
