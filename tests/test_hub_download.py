"""Downloading a hub checkpoint into models/reward_models/<name> (backend/hub_download.py) against a fake hub:
a stand-in for huggingface_hub.snapshot_download that copies a tiny checkpoint written by `rewarddance tiny-model`
and drives the progress bars the way huggingface_hub does. Nothing here touches the network."""

from __future__ import annotations

import fnmatch
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewarddance.backend.cli import main
from rewarddance.backend.hub_download import HubDownloadError, download_checkpoint, is_staging
from rewarddance.backend.model_sources import download_command
from rewarddance.backend.vlm.loading import HUB_FILES

HUB_ID = "Qwen/Qwen2.5-VL-3B-Instruct"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint written by `rewarddance tiny-model`, plus a file the download patterns leave out."""
    out = tmp_path_factory.mktemp("hub") / "tiny"
    assert main(["tiny-model", "--family", "qwen2_5_vl", "--size", "xs", "--out", str(out)]) == 0
    (out / "training_args.bin").write_bytes(b"\0" * 100)
    return out


def wanted(source: Path, patterns: list[str]) -> list[Path]:
    return sorted(p for p in source.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, x) for x in patterns))


class RepositoryNotFoundError(Exception):
    """Named like huggingface_hub's error for a repository that does not exist."""


class Cancelled(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


class FakeHub:
    """snapshot_download that copies `source` in chunks, updating bars like huggingface_hub 1.x/2.x does."""

    def __init__(self, source: Path, fail_at: int | None = None, error: Exception | None = None, threads: int = 1):
        self.source, self.fail_at, self.error, self.threads = source, fail_at, error, threads
        self.calls: list[dict] = []
        self.copied: list[str] = []

    def __call__(self, repo_id: str, *, local_dir: str, allow_patterns: list[str], tqdm_class: type) -> str:
        self.calls.append({"repo_id": repo_id, "local_dir": local_dir, "allow_patterns": allow_patterns})
        files = wanted(self.source, allow_patterns)
        written = tqdm_class(total=0, initial=0, unit="B", desc="Reconstructing (incomplete total...)", disable=True)
        network = tqdm_class(total=0, initial=0, unit="B", desc="Downloading bytes", disable=True)
        written.total = network.total = sum(p.stat().st_size for p in files)
        bar = tqdm_class(total=len(files), desc=f"Fetching {len(files)} files", disable=True)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True)

        def fetch(index_path: tuple[int, Path]) -> None:
            index, path = index_path
            if index == self.fail_at:
                raise self.error or ConnectionError("[Errno -3] Temporary failure in name resolution")
            data = path.read_bytes()
            with open(Path(local_dir) / path.name, "wb") as f:
                for start in range(0, len(data), max(1, len(data) // 3)):
                    chunk = data[start : start + max(1, len(data) // 3)]
                    f.write(chunk)
                    network.update(len(chunk) // 2)  # fewer bytes on the wire than written (xet compression)
                    written.update(len(chunk))
            self.copied.append(path.name)
            bar.update(1)

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(fetch, enumerate(files)))
        return str(local_dir)


def folder_listing(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


def test_download_fills_the_target_and_reports_bytes_written(checkpoint, tmp_path):
    hub, calls = FakeHub(checkpoint), []
    target = tmp_path / "reward_models" / "Qwen2.5-VL-3B-Instruct"
    assert download_checkpoint(HUB_ID, target, lambda done, total: calls.append((done, total)), hub) == target
    assert hub.calls == [{"repo_id": HUB_ID, "local_dir": hub.calls[0]["local_dir"], "allow_patterns": HUB_FILES}]
    assert is_staging(Path(hub.calls[0]["local_dir"]).name) and Path(hub.calls[0]["local_dir"]).parent == target.parent
    expected = wanted(checkpoint, HUB_FILES)
    assert sorted(os.listdir(target)) == sorted(p.name for p in expected)  # no .cache, no training_args.bin
    assert all((target / p.name).read_bytes() == p.read_bytes() for p in expected)
    assert folder_listing(target.parent) == [target.name]  # the staging folder was renamed, nothing else left
    total = sum(p.stat().st_size for p in expected)
    assert {t for _, t in calls} == {total}  # the bytes-written bar, not the network bar or the file count
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (total, total)
    assert len(calls) <= 502


def test_an_installed_checkpoint_is_not_downloaded_again(checkpoint, tmp_path):
    hub = FakeHub(checkpoint)
    target = tmp_path / "Qwen2.5-VL-3B-Instruct"
    shutil.copytree(checkpoint, target)
    assert download_checkpoint(HUB_ID, target, None, hub) == target and hub.calls == []


@pytest.mark.parametrize("threads", [1, 3])
def test_a_failed_download_leaves_no_folder_and_says_how_to_get_the_files(checkpoint, tmp_path, threads):
    hub = FakeHub(checkpoint, fail_at=2, threads=threads)
    target = tmp_path / "reward_models" / "Qwen2.5-VL-3B-Instruct"
    with pytest.raises(HubDownloadError) as err:
        download_checkpoint(HUB_ID, target, lambda d, t: None, hub)
    assert folder_listing(target.parent) == []  # neither the target nor a half-filled staging folder
    message = str(err.value)
    assert message.startswith(f"model: {HUB_ID!r} is not downloaded and cannot be fetched from the Hugging Face hub")
    assert "ConnectionError: [Errno -3] Temporary failure in name resolution" in message
    assert f"`{download_command(HUB_ID, str(target.parent))}`" in message
    assert f"`hf download {HUB_ID} --local-dir {target}`" in message and f"put the folder at {target}" in message


def test_offline_fails_before_any_download_with_the_one_message(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = FakeHub(checkpoint)
    target = tmp_path / "reward_models" / "Qwen2.5-VL-3B-Instruct"
    with pytest.raises(HubDownloadError) as err:
        download_checkpoint(HUB_ID, target, None, hub)
    assert hub.calls == [] and not target.parent.exists()
    assert str(err.value) == (
        f"model: {HUB_ID!r} is not downloaded and cannot be fetched from the Hugging Face hub (HF_HUB_OFFLINE is "
        f"set); download it where there is internet with `hf download {HUB_ID} --local-dir {target}` and put the "
        f"folder at {target} (it must contain config.json)"
    )


def test_an_unknown_hub_id_is_named_and_not_called_offline(checkpoint, tmp_path):
    hub = FakeHub(checkpoint, fail_at=0, error=RepositoryNotFoundError("404 Client Error"))
    with pytest.raises(HubDownloadError, match=r"has no model 'Qwen/Nope' you can download .*spelling.*hf auth login"):
        download_checkpoint("Qwen/Nope", tmp_path / "Nope", None, hub)
    assert folder_listing(tmp_path) == []


def test_a_full_disk_is_reported_as_such(checkpoint, tmp_path):
    hub = FakeHub(checkpoint, fail_at=1, error=OSError(28, "No space left on device"))
    with pytest.raises(HubDownloadError, match="no space left on the disk of"):
        download_checkpoint(HUB_ID, tmp_path / "x", None, hub)
    assert folder_listing(tmp_path) == []


@pytest.mark.parametrize("threads", [1, 3])
def test_cancel_from_the_progress_callback_stops_every_thread_and_cleans_up(checkpoint, tmp_path, threads):
    hub = FakeHub(checkpoint, threads=threads)
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(threading.get_ident())
        if done > 0:
            raise Cancelled()

    with pytest.raises(Cancelled):  # re-raised unchanged, so ComfyUI treats it as its own Cancel
        download_checkpoint(HUB_ID, tmp_path / "reward_models" / "x", progress, hub)
    assert folder_listing(tmp_path / "reward_models") == []
    assert len(hub.copied) < len(wanted(checkpoint, HUB_FILES)) and len(seen) == 2  # no progress after Cancel


def test_a_folder_without_config_json_is_not_overwritten(checkpoint, tmp_path):
    target = tmp_path / "Qwen2.5-VL-3B-Instruct"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"x")
    hub = FakeHub(checkpoint)
    with pytest.raises(HubDownloadError, match="exists but has no config.json"):
        download_checkpoint(HUB_ID, target, None, hub)
    assert hub.calls == [] and os.listdir(target) == ["model.safetensors"]


def test_a_repository_without_config_json_is_refused(checkpoint, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(HubDownloadError, match="has no config.json; it is not a model checkpoint"):
        download_checkpoint(HUB_ID, tmp_path / "out" / "x", None, FakeHub(source))
    assert folder_listing(tmp_path / "out") == []


def test_files_are_counted_when_the_hub_library_reports_no_bytes(checkpoint, tmp_path):
    class FilesOnly(FakeHub):
        def __call__(self, repo_id, *, local_dir, allow_patterns, tqdm_class):
            files = wanted(self.source, allow_patterns)
            bar = tqdm_class(total=len(files), desc=f"Fetching {len(files)} files", disable=True)
            for path in files:
                shutil.copy(path, Path(local_dir) / path.name)
                bar.update(1)
            return local_dir

    calls = []
    download_checkpoint(HUB_ID, tmp_path / "x", lambda d, t: calls.append((d, t)), FilesOnly(checkpoint))
    n = len(wanted(checkpoint, HUB_FILES))
    assert calls == [(i, n) for i in range(1, n + 1)]
