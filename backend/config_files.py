"""What users configure outside code: TOML/YAML config files (for `serve`, `train` and `train-rm`) and the
environment variables that hold the server token and name the hosts the clients may send it to. The ground
floor: the server, the trainers and the client all read these."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TOKEN_ENV = "REWARDDANCE_TOKEN"  # the bearer token of `rewarddance serve`, read by the server and the clients
TOKEN_HOSTS_ENV = "REWARDDANCE_TOKEN_HOSTS"  # host[:port],... the clients may send TOKEN_ENV to (default: loopback)


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


def env_token_for(url: str) -> str | None:
    """$REWARDDANCE_TOKEN when `url`'s host (and port) is in $REWARDDANCE_TOKEN_HOSTS (default: loopback), else None."""
    token = os.environ.get(TOKEN_ENV) or None
    return token if token and token_host_allowed(url) else None


def token_host_allowed(url: str) -> bool:
    """True when the environment token may go to `url`: a listed host[:port], or loopback while nothing is listed."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    listed = token_hosts()
    if listed is None:
        return is_loopback(host)
    return any(h == "*" or (h == host and p in (None, port)) for h, p in listed)


def token_hosts() -> list[tuple[str, int | None]] | None:
    """The (host, port or None) entries of $REWARDDANCE_TOKEN_HOSTS; None when it is unset or empty."""
    raw = os.environ.get(TOKEN_HOSTS_ENV, "").strip()
    if not raw:
        return None
    return [_token_host(entry.strip()) for entry in raw.split(",") if entry.strip()]


def _token_host(entry: str) -> tuple[str, int | None]:
    """'gpubox:8765' -> ('gpubox', 8765); 'gpubox', '::1', '[::1]:8765' and '*' work too."""
    if entry == "*":
        return "*", None
    try:
        return str(ipaddress.ip_address(entry.strip("[]"))), None
    except ValueError:
        pass
    try:
        parts = urlsplit(f"//{entry}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or parts.path or parts.username or parts.password:
        raise ValueError(
            f"{TOKEN_HOSTS_ENV}: {entry!r} is not host or host:port; give comma-separated entries such as "
            "'gpubox.local:8765,127.0.0.1'"
        )
    return host.lower(), port


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
