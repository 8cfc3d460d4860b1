"""What a subcommand declares: its name, its help line, how it adds its flags, and the function it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One `rewarddance NAME` subcommand (`interrupt_hint`: what Ctrl+C leaves behind, said after "interrupted")."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    interrupt_hint: str = ""
