"""How the command line reports a failure: the error type users cause (exit 2) and one line for every other
exception (exit 1, the traceback only with --debug)."""

from __future__ import annotations

import argparse
import sys

INTERNAL = 1  # exit status of an unexpected failure (a bug, or something the checks could not foresee)
USAGE = 2  # exit status of a user error: bad input, missing file, model not found


class CLIError(Exception):
    """A user error the CLI reports in one line and exits 2 for."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types whose message is written for the user: reported as they are, exit 2."""
    from ..client_requests import BackendError
    from ..vlm.loading import ModelLoadError

    # ValueError covers MediaError, ConfigFileError, RunError, DataError, JudgeError and LabelError.
    return (CLIError, ValueError, ModelLoadError, BackendError, ImportError)


def one_line(text: str) -> str:
    """The message on one line (line breaks become '; ')."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def os_error_message(exc: OSError) -> str:
    """An OSError as its reason and the path it concerns, e.g. "cannot write 'x': Permission denied"."""
    path = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc)
    return f"{reason}: {str(path)!r}" if path is not None else one_line(reason)


def report_failure(exc: BaseException, args: argparse.Namespace) -> int:
    """Write the one-line message of a failed command to stderr and return its exit status."""
    if isinstance(exc, KeyboardInterrupt):
        hint = getattr(args, "interrupt_hint", "")
        print(f"rewarddance: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    if isinstance(exc, user_error_types()):
        message, status = one_line(str(exc)), USAGE
    elif isinstance(exc, OSError):
        message, status = os_error_message(exc), USAGE
    elif isinstance(exc, MemoryError):
        message, status = "out of memory; lower the pixel budget (--max-pixels) or the batch size", INTERNAL
    else:
        message = f"unexpected {type(exc).__name__}: {one_line(str(exc))} (rerun with --debug for the traceback)"
        status = INTERNAL
    print(f"rewarddance: error: {message}", file=sys.stderr)
    return status
