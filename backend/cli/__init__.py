"""Command line: `rewarddance score | rerank | serve | search | train | train-rm | eval-rm | make-pairs | tiny-model |
tiny-generator`.

One module per command family (scoring, serve, search, train, reward_training, pairs, tiny), each declaring its
`Command`s; `registry` lists them and builds the parser; `io` holds the result-file formats."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .errors import CLIError
from .model_options import DEFAULT_MODEL
from .registry import COMMANDS, build_parser
from .serve import serve_settings

__all__ = ["COMMANDS", "DEFAULT_MODEL", "CLIError", "build_parser", "main", "serve_settings"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rewarddance` console script and `python -m rewarddance`."""
    from ..client import BackendError
    from ..media import MediaError
    from ..vlm.loading import ModelLoadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, MediaError, ModelLoadError, BackendError, ValueError) as exc:
        print(f"rewarddance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rewarddance: interrupted; finished rows are kept in --out (use --resume)", file=sys.stderr)
        return 130
