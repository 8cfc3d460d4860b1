"""Where a model comes from: a local directory or a Hugging Face hub id, checked without loading anything, and
the one download command every message suggests."""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the hub spells repository ids


def looks_like_hub_id(text: str) -> bool:
    """`owner/name` that is not an existing local path (a hub id, not a directory)."""
    return bool(HUB_ID.match(text)) and not Path(text).expanduser().exists() and ".." not in text


def hub_offline() -> bool:
    """Whether huggingface_hub is told not to go online (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no")


def hub_cached(hub_id: str) -> bool:
    """Whether the hub cache holds a snapshot of `hub_id` (a model's config.json or a pipeline's model_index.json)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(hub_id, name), str) for name in ("config.json", "model_index.json"))


def download_command(hub_id: str, folder: str = "/models") -> str:
    """The shell command that downloads a hub checkpoint into `folder/<name>` (huggingface_hub >= 1.0's `hf`)."""
    return f"hf download {hub_id} --local-dir {folder}/{hub_id.split('/')[-1]}"


def source_problem(source: str, what: str = "model") -> str | None:
    """Why `source` can be neither a local directory nor a hub id, in words, or None when it can be one."""
    text = str(source).strip()
    if not text:
        return f"the {what} is empty; pass a checkpoint directory or a hub id like owner/name"
    path = Path(text).expanduser()
    if path.exists():
        return None if path.is_dir() else f"{text!r} is a file; pass the {what}'s directory"
    if looks_like_hub_id(text):
        if hub_offline() and not hub_cached(text):
            return (
                f"{what} {text!r} is a hub id that is not downloaded, and HF_HUB_OFFLINE is set: download it "
                f"where there is internet (`{download_command(text)}`) and pass that directory"
            )
        return None
    return f"{what} directory {text!r} does not exist (and it is not a hub id like owner/name); check the path"
