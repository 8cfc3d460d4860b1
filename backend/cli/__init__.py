"""Command line: `rewarddance score | rerank | serve | search | train | train-rm | eval-rm | make-pairs | tiny-model |
tiny-generator | sample-photos`.

One module per command family (scoring, serve, search, train, reward_training, pairs, tiny), each declaring its
`Command`s; `registry` lists them and builds the parser; `io` holds the result-file formats; `checks` the cheap
input checks every command runs before loading anything; `errors` how a failure is reported (one line, or the
traceback with --debug)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CLIError, report_failure
from .model_options import DEFAULT_MODEL
from .registry import COMMANDS, build_parser, quiet_libraries
from .serve import serve_settings

__all__ = ["COMMANDS", "DEFAULT_MODEL", "CLIError", "build_parser", "main", "serve_settings"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rewarddance` console script and `python -m rewarddance`."""
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return report_failure(KeyboardInterrupt(), args)
    except Exception as exc:  # every failure becomes one line; --debug re-raises for the traceback
        if args.debug:
            raise
        return report_failure(exc, args)
