"""The scoring backend's routes on ComfyUI's own server (under /rewarddance/), sharing the nodes' models.

When ComfyUI listens beyond loopback (`--listen`), scoring, load and unload need $REWARDDANCE_TOKEN (403
while it is unset); health, ready, models, metrics and openapi stay open. Cross-origin browser requests are
refused unless ComfyUI's `--enable-cors-header` names their origin.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ..backend.config_files import TOKEN_ENV, is_loopback
from ..backend.server.app import ScoringService, mount
from ..backend.server.manager import ModelManager
from ..backend.server.origin import normalize_origin
from ..backend.server.settings import ServerSettings, SettingsError

log = logging.getLogger("rewarddance")
_SERVICE: ScoringService | None = None
_LOOP: asyncio.AbstractEventLoop | None = None  # ComfyUI's server loop, where batchers live


def attach() -> None:
    """Mount the routes on ComfyUI's PromptServer once (no-op outside a running ComfyUI)."""
    global _SERVICE, _LOOP
    if _SERVICE is not None:
        return
    try:
        from server import PromptServer
    except ImportError:
        return
    host = getattr(PromptServer, "instance", None)
    if host is None:
        return
    _LOOP = getattr(host, "loop", None)
    existing = getattr(host, "rewarddance_service", None)
    if existing is not None:  # the pack was imported twice (two custom_nodes paths): share one service
        _SERVICE = existing
        return
    guard_mounted_scoring()
    exposed = comfy_listens_beyond_loopback()
    settings = ServerSettings(models={}, token=mounted_token() if exposed else None)
    _SERVICE = ScoringService(settings, ModelManager(settings))
    host.rewarddance_service = _SERVICE
    mount(host.routes, _SERVICE, "/rewarddance", require_token_for_heavy=exposed, allow_origins=comfy_cors_origins())
    if exposed and settings.token is None:
        log.warning(
            "rewarddance: ComfyUI listens beyond this machine and %s is not set: /rewarddance/ scoring, load and "
            "unload answer 403 until it is",
            TOKEN_ENV,
        )


def guard_mounted_scoring() -> None:
    """Mounted scoring from HTTP threads waits for a running prompt (ComfyUI's model management is one-thread)."""
    try:
        from .memory import guard_prompts
    except ImportError:  # no ComfyUI model management here (a test's stand-in): nothing to guard
        return
    guard_prompts()


def comfy_args() -> Any:
    """ComfyUI's parsed command line (`comfy.cli_args.args`), or None when it cannot be imported."""
    try:
        from comfy.cli_args import args
    except Exception:  # not inside ComfyUI, or a build without it
        return None
    return args


def comfy_listens_beyond_loopback() -> bool:
    """True unless every address ComfyUI's `--listen` names is a loopback one (unknown: True, the safe side)."""
    args = comfy_args()
    listen = getattr(args, "listen", None) if args is not None else None
    if not isinstance(listen, str) or not listen.strip():
        return True
    return not all(is_loopback(h.strip().strip("[]")) for h in listen.split(",") if h.strip())


def comfy_cors_origins() -> list[str]:
    """The origin ComfyUI's `--enable-cors-header` allows ('*' when given without one); [] when it is off."""
    origin = getattr(comfy_args(), "enable_cors_header", None)
    if not isinstance(origin, str) or not origin.strip():
        return []
    try:
        return [normalize_origin(origin.strip(), "--enable-cors-header")]
    except ValueError as exc:
        log.warning("rewarddance: %s; /rewarddance/ allows no other origin", exc)
        return []


def mounted_token() -> str | None:
    """$REWARDDANCE_TOKEN when it is a usable token (8+ characters); None (logged) otherwise."""
    token = os.environ.get(TOKEN_ENV) or None
    try:
        ServerSettings(token=token).validate(require_models=False)
    except SettingsError as exc:
        log.warning("rewarddance: %s ignored for /rewarddance/: %s", TOKEN_ENV, exc)
        return None
    return token


def model_name(path: str) -> str:
    """The name a loaded checkpoint is served under: its folder name (or the hub id's last part)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "-", path.rstrip("/").split("/")[-1])[:64] or "reward-model"


def share(name: str, model: Any) -> None:
    """Serve a model the loader node loaded under `name` at /rewarddance/v1/..."""
    if _SERVICE is None or model is None:
        return
    manager = _SERVICE.manager
    current = manager.loaded.get(name)
    if current is not None and current.model is model:
        return
    if current is not None:
        _close_later(manager.loaded.pop(name, None))
    manager.register(name, model, pinned=True)


def forget(model: Any) -> None:
    """Stop serving a model ComfyUI unloaded, so the server holds no reference to its weights."""
    if _SERVICE is None or model is None:
        return
    for entry in _SERVICE.manager.forget(model):
        _close_later(entry)


def _close_later(entry: Any) -> None:
    """Stop a dropped entry's batcher (its worker thread and task) on the server's loop."""
    if entry is None or _LOOP is None or not _LOOP.is_running():
        return
    asyncio.run_coroutine_threadsafe(entry.batcher.close(), _LOOP)
