"""The cheap checks of user input every command runs before it loads a model or scores anything: texts that must
not be empty, output paths that must be writable, model sources that must exist, criteria presets by name."""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from ..model_sources import source_problem
from ..scoring.prompts import CRITERIA_PRESETS
from .errors import CLIError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what Pillow writes for --sheet and search's --out


def check_text(value: str | None, flag: str) -> None:
    """Refuse an empty or blank text (a prompt, a criteria text)."""
    if value is not None and not value.strip():
        raise CLIError(f'{flag} is empty; pass the text, e.g. {flag} "a red fox in the snow"')


def check_model_source(value: str | None, flag: str) -> None:
    """Refuse a model that is neither an existing directory nor a hub id (before anything loads)."""
    if value is None:
        return
    problem = source_problem(value)
    if problem:
        raise CLIError(f"{flag}: {problem}")


def check_writable_file(path: str | None, flag: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an output file with the wrong suffix, that is a directory, or whose folder cannot be written."""
    if path is None:
        return
    target = Path(path).expanduser()
    if suffixes and target.suffix.lower() not in suffixes:
        raise CLIError(f"{flag} must end in {either(suffixes)}, got {path!r}")
    if target.is_dir():
        raise CLIError(f"{flag} {path!r} is a directory; pass a file name")
    check_creatable(target.parent, flag, path)


def either(items: tuple[str, ...]) -> str:
    """'a, b or c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def check_writable_folder(path: str | None, flag: str) -> None:
    """Refuse an output folder that is a file or cannot be created or written."""
    if path is None:
        return
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise CLIError(f"{flag} {path!r} is a file; pass a directory")
    check_creatable(target, flag, path)


def check_creatable(folder: Path, flag: str, given: str) -> None:
    """The folder exists and is writable, or its nearest existing parent is one it can be created in."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CLIError(f"{flag} {given!r}: {str(existing)!r} is a file, not a folder")
    try:  # a real write, not os.access: root, read-only mounts and /proc answer os.access wrongly
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise CLIError(
            f"{flag} {given!r}: cannot write in {str(existing)!r} ({exc.strerror or exc}); choose another path"
        ) from exc


def parse_criteria(presets: str | None, text: str | None, flag: str = "--criteria") -> tuple[str, ...]:
    """The criteria of --criteria (preset names, comma-separated) and --criteria-text (your own words)."""
    names = tuple(p.strip() for p in (presets or "").split(",") if p.strip())
    for name in names:
        if name not in CRITERIA_PRESETS:
            close = difflib.get_close_matches(name, list(CRITERIA_PRESETS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CLIError(
                f"{flag}: {name!r} is not a criteria preset; {hint}presets: {', '.join(CRITERIA_PRESETS)} "
                "(your own criteria in words go in --criteria-text)"
            )
    if presets is not None and not names:
        raise CLIError(f"{flag} is empty; pass preset names, e.g. {flag} alignment,plausibility")
    check_text(text, "--criteria-text")
    return names + ((text.strip(),) if text else ())
