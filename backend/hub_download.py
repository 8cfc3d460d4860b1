"""Download a Hugging Face hub checkpoint into a folder, all or nothing, reporting progress to a callback.

`download_checkpoint("Qwen/Qwen2.5-VL-3B-Instruct", models / "reward_models" / "Qwen2.5-VL-3B-Instruct", progress)`
fetches the checkpoint's files (the patterns `vlm.loading.HUB_FILES` loads) into a hidden staging folder next to
the target and renames it into place only when every file arrived, so a failed or cancelled download never leaves
a half checkpoint where loaders look. `progress(done, total)` is called with bytes (or files, where the installed
huggingface_hub reports only files) from huggingface_hub's progress bars, possibly from its download threads; an
exception it raises (ComfyUI's Cancel) stops every download thread and is re-raised unchanged. Offline
(HF_HUB_OFFLINE, or the hub cannot be reached) the error says where to put the files and the `hf download` command.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .model_sources import download_command, hub_offline
from .vlm.loading import HUB_FILES, ModelLoadError

Progress = Callable[[int, int], None]
STAGING_PREFIX = ".download-"  # staging folders start with a dot: never listed as checkpoints
UPDATES = 500  # at most about this many progress calls per download (plus the last one)


class HubDownloadError(ModelLoadError):
    """A hub checkpoint could not be downloaded; the message says where to put the files by hand."""


def staging_folder(target: Path) -> Path:
    """The hidden folder next to `target` that a download fills before it is renamed into place."""
    return target.parent / f"{STAGING_PREFIX}{target.name}-{os.getpid()}"


def is_staging(name: str) -> bool:
    """Whether a folder name is a download in progress (or one a killed process left)."""
    return name.startswith(STAGING_PREFIX)


def manual_steps(hub_id: str, target: Path) -> str:
    """Where to put the files by hand, with the command that downloads them there."""
    return (
        f"download it where there is internet with `{download_command(hub_id, str(target.parent))}` "
        f"and put the folder at {target} (it must contain config.json)"
    )


def offline_message(hub_id: str, target: Path, reason: str = "HF_HUB_OFFLINE is set") -> str:
    """The one message for a hub checkpoint that cannot be downloaded here."""
    return f"model: {hub_id!r} is not downloaded and cannot be fetched from the Hugging Face hub ({reason}); " + (
        manual_steps(hub_id, target)
    )


class _Reporter:
    """Collects huggingface_hub's progress bars and forwards the most precise one to the callback, thread-safely."""

    def __init__(self, callback: Progress) -> None:
        self.callback = callback
        self.bars: list[Any] = []
        self.lock = threading.Lock()
        self.failure: BaseException | None = None
        self.last: tuple[int, int] = (-1, -1)

    def current(self) -> tuple[int, int]:
        """(done, total) of the bytes-written bar when there is one with a total, else of the files bar."""
        bytes_bars = [b for b in self.bars if b.counts_bytes and (b.total or 0) > 0]
        written = [b for b in bytes_bars if not b.network]
        chosen = (written or bytes_bars or [b for b in self.bars if (b.total or 0) > 0] or [None])[0]
        if chosen is None:
            return 0, 0
        total = int(chosen.total)
        return min(int(chosen.counted), total), total

    def due(self, done: int, total: int) -> bool:
        """Whether (done, total) is worth a call: a new total, the end, or a step of about 1/UPDATES."""
        last_done, last_total = self.last
        if total <= 0 or (done, total) == self.last:
            return False
        return total != last_total or done >= total or done - last_done >= max(1, total // UPDATES)

    def changed(self) -> None:
        """Report progress if it moved enough; re-raise a callback failure in every download thread."""
        with self.lock:
            if self.failure is not None:
                raise self.failure
            done, total = self.current()
            if not self.due(done, total):
                return
            self.last = (done, total)
            try:
                self.callback(done, total)
            except BaseException as exc:
                self.failure = exc
                raise


def reporting_tqdm(reporter: _Reporter) -> type:
    """A tqdm class for huggingface_hub's `tqdm_class` that tells `reporter` about every update."""

    class ReportingTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own bar takes a group name; tqdm does not
            super().__init__(*args, **kwargs)
            self.counted = int(kwargs.get("initial", 0) or 0)
            self.counts_bytes = kwargs.get("unit") == "B"  # a disabled tqdm keeps neither unit nor desc
            self.network = "bytes" in str(kwargs.get("desc", "")).lower()  # xet's bytes-on-the-wire bar
            with reporter.lock:
                reporter.bars.append(self)

        def update(self, n: float | None = 1) -> bool | None:
            self.counted += int(n or 0)
            shown = super().update(n)
            reporter.changed()
            return shown

    return ReportingTqdm


def download_checkpoint(
    hub_id: str,
    target: Path,
    progress: Progress | None = None,
    snapshot_download: Callable[..., Any] | None = None,
) -> Path:
    """Download `hub_id` into `target` (all files or none) and return it; an existing checkpoint is kept."""
    target = Path(target)
    if (target / "config.json").is_file():
        return target
    if hub_offline():
        raise HubDownloadError(offline_message(hub_id, target))
    if target.exists():
        raise HubDownloadError(
            f"model: {target} exists but has no config.json (an unfinished copy?); delete or complete it, or "
            + manual_steps(hub_id, target)
        )
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    staging = staging_folder(target)
    reporter = _Reporter(progress or (lambda done, total: None))
    try:
        staging.mkdir(parents=True, exist_ok=True)  # a folder a killed run left is resumed by huggingface_hub
        snapshot_download(hub_id, local_dir=str(staging), allow_patterns=HUB_FILES, tqdm_class=reporting_tqdm(reporter))
        if not (staging / "config.json").is_file():
            raise HubDownloadError(f"model: {hub_id!r} on the hub has no config.json; it is not a model checkpoint")
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        publish(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if reporter.failure is not None and exc is reporter.failure:
            raise  # the callback stopped the download (ComfyUI's Cancel): re-raised as it is
        raise explain(exc, hub_id, target) from exc
    return target


def publish(staging: Path, target: Path) -> None:
    """Rename the finished download into place; another process that finished first wins."""
    try:
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def explain(exc: BaseException, hub_id: str, target: Path) -> BaseException:
    """The user-facing error for a failed download (interrupts and our own errors pass through)."""
    if isinstance(exc, (HubDownloadError, KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
        return exc
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
        return HubDownloadError(
            f"model: the Hugging Face hub has no model {hub_id!r} you can download ({name}); check the spelling "
            "(owner/name), and for a gated or private model log in with `hf auth login`"
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return HubDownloadError(f"model: no space left on the disk of {target.parent} while downloading {hub_id!r}")
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    return HubDownloadError(offline_message(hub_id, target, f"{name}: {detail}" if detail else name))
