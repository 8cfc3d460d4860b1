"""Every subcommand, in the order `rewarddance --help` lists them, and the parser built from them."""

from __future__ import annotations

import argparse

from . import pairs, reward_training, scoring, search, serve, tiny, train
from .command import Command

COMMANDS: tuple[Command, ...] = (
    *scoring.COMMANDS,
    *serve.COMMANDS,
    *search.COMMANDS,
    *train.COMMANDS,
    *reward_training.COMMANDS,
    *pairs.COMMANDS,
    *tiny.COMMANDS,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="rewarddance", description='Generative VLM reward models: P("yes") scores.')
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.handler)
    return parser
