"""The scoring backend's routes on ComfyUI's own server (under /rewarddance/), sharing the nodes' models."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..backend.server.app import ScoringService, mount
from ..backend.server.manager import ModelManager
from ..backend.server.settings import ServerSettings

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
    settings = ServerSettings(models={})
    _SERVICE = ScoringService(settings, ModelManager(settings))
    host.rewarddance_service = _SERVICE
    mount(host.routes, _SERVICE, "/rewarddance")


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
