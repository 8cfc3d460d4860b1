"""What users configure outside code: TOML/YAML config files (for `serve`, `train` and `train-rm`) and the
environment variable that holds the server token. The ground floor: the server, the trainers and the
client all read these."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOKEN_ENV = "REWARDDANCE_TOKEN"  # the bearer token of `rewarddance serve`, read by the server and the clients


class ConfigFileError(ValueError):
    """A config file is missing, unreadable or has keys that do not belong; the message names the file and key."""


def check_config_keys(data: dict[str, Any], known: set[str], required: Sequence[str], path: str | os.PathLike) -> None:
    """Refuse unknown and missing top-level keys of a config file, naming them and the known ones."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigFileError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigFileError(f"{path}: missing required key(s) {', '.join(missing)}")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML (.toml) or YAML (.yaml/.yml) config file (server, `train`, `train-rm`) as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"--config {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                raise ConfigFileError(
                    f"--config {path}: reading YAML needs PyYAML (`pip install pyyaml`); or write the config as TOML"
                ) from exc
            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise ConfigFileError(f"--config {path}: expected a mapping at the top level")
            return data
    except ConfigFileError:
        raise
    except Exception as exc:
        raise ConfigFileError(f"--config {path}: cannot parse it ({type(exc).__name__}: {exc})") from exc
    raise ConfigFileError(f"--config {path}: use a .toml, .yaml or .yml file")
