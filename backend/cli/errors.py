"""The one error type the command line reports as a single line (exit status 2)."""

from __future__ import annotations


class CLIError(Exception):
    """A user error the CLI reports in one line and exits 2 for."""
