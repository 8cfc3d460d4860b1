"""What the Load Reward Model node's `model` list offers and what a choice (or a typed hub id / path) means.

The list holds the checkpoint folders installed under the reward_models folders, then the judge presets that are
not installed yet, marked " (download)". A choice resolves to a folder to load and, when that folder is still
missing, the hub id to download into it first (`<first reward_models folder>/<name>`). Saved values keep working
whatever is installed: "Qwen2.5-VL-7B-Instruct" (a preset's folder name) and
"Qwen/Qwen2.5-VL-7B-Instruct (download)" both mean that preset, downloaded or not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .model_sources import looks_like_hub_id

PRESETS = ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")
DOWNLOAD_MARK = " (download)"
LEGACY_HUB_CHOICE = "(hub id below)"  # release 0.1's list entry that meant "use the hub_id text"
LEGACY_HUB_ID = "Qwen/Qwen2.5-VL-7B-Instruct"  # release 0.1's hub_id default, saved next to every model choice


@dataclass(frozen=True)
class ResolvedModel:
    """A checkpoint folder to load, and the hub id to download into it first when it is missing."""

    path: Path
    hub_id: str | None = None

    @property
    def needs_download(self) -> bool:
        """Whether the folder is missing and must be downloaded from the hub before loading."""
        return self.hub_id is not None and not (self.path / "config.json").is_file()


def folder_name(hub_id: str) -> str:
    """The folder a hub id is downloaded into: its name without the owner."""
    return hub_id.split("/")[-1]


def installed_checkpoints(roots: Iterable[str | os.PathLike]) -> list[str]:
    """Checkpoint folders (with a config.json) in the reward_models folders, without downloads in progress."""
    found = []
    for root in map(Path, roots):
        if root.is_dir():
            for entry in sorted(root.iterdir()):
                if not entry.name.startswith(".") and (entry / "config.json").is_file():
                    found.append(entry.name)
    return list(dict.fromkeys(found))  # the same folder may be registered twice


def model_options(installed: Sequence[str]) -> list[str]:
    """The `model` list: installed folders, then the presets not installed yet, marked " (download)"."""
    missing = [p + DOWNLOAD_MARK for p in PRESETS if folder_name(p) not in installed]
    return list(installed) + missing


def find_installed(name: str, roots: Sequence[str | os.PathLike]) -> Path | None:
    """The installed checkpoint folder called `name` in the first reward_models folder that has it."""
    for root in roots:
        path = Path(root) / name
        if (path / "config.json").is_file():
            return path
    return None


def from_hub_id(hub_id: str, roots: Sequence[str | os.PathLike]) -> ResolvedModel:
    """A hub id: its installed folder, or the folder to download it into."""
    installed = find_installed(folder_name(hub_id), roots)
    if installed is not None:
        return ResolvedModel(installed)
    if not roots:
        raise ValueError("model: no reward_models folder is registered; add one in extra_model_paths.yaml")
    return ResolvedModel(Path(roots[0]) / folder_name(hub_id), hub_id)


def from_text(text: str, roots: Sequence[str | os.PathLike], input_name: str) -> ResolvedModel:
    """A typed checkpoint folder path or hub id."""
    path = Path(text).expanduser()
    if path.is_dir():
        return ResolvedModel(path)
    if looks_like_hub_id(text):
        return from_hub_id(text, roots)
    raise ValueError(
        f"{input_name}: {text!r} is neither a checkpoint folder nor a hub id like Qwen/Qwen2.5-VL-3B-Instruct; "
        "check the spelling, or clear it to use the model list"
    )


def resolve(model: str, hub_id: str, roots: Sequence[str | os.PathLike]) -> ResolvedModel:
    """What the loader loads for its `model` choice and `hub_id` text (hub_id wins when filled in)."""
    model, typed = str(model).strip(), str(hub_id).strip()
    if model == LEGACY_HUB_CHOICE:
        if not typed:
            raise ValueError("hub_id: type a hub id such as Qwen/Qwen2.5-VL-3B-Instruct, or pick a model in the list")
        return from_text(typed, roots, "hub_id")
    if typed and typed != LEGACY_HUB_ID:
        return from_text(typed, roots, "hub_id")
    name = model.removesuffix(DOWNLOAD_MARK).strip()
    if not name:
        raise ValueError("model: pick a reward model in the list (or type a hub id in hub_id)")
    installed = find_installed(name, roots) if "/" not in name and "\\" not in name else None
    if installed is not None:
        return ResolvedModel(installed)
    preset = next((p for p in PRESETS if name in (p, folder_name(p))), None)
    if preset is not None:
        return from_hub_id(preset, roots)
    if Path(name).expanduser().is_dir() or looks_like_hub_id(name):
        return from_text(name, roots, "model")
    raise ValueError(
        f"model: {name!r} is not in models/reward_models (installed: {', '.join(installed_checkpoints(roots)) or 'none'}); "
        "refresh the node (press R) and pick one, or type a hub id in hub_id"
    )
