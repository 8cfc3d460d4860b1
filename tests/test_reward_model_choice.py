"""The Load Reward Model node's `model` list and what each choice (or hub_id text) loads or downloads
(backend/reward_model_choice.py), on plain folders: no ComfyUI, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewarddance.backend.reward_model_choice import (
    LEGACY_HUB_CHOICE,
    ResolvedModel,
    installed_checkpoints,
    model_options,
    resolve,
)


def checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def roots(tmp_path) -> list[Path]:
    """Two reward_models folders: 'tiny-qwen' in the first, 'judge' in the second, plus things that are not listed."""
    first, second = tmp_path / "models" / "reward_models", tmp_path / "extra" / "reward_models"
    checkpoint(first / "tiny-qwen")
    checkpoint(second / "judge")
    checkpoint(second / "tiny-qwen")  # listed once
    (first / "empty").mkdir()  # no config.json
    checkpoint(first / ".download-Qwen2.5-VL-3B-Instruct-123")  # a download in progress
    return [first, second]


def test_the_list_is_installed_folders_then_presets_to_download(roots):
    assert installed_checkpoints(roots) == ["tiny-qwen", "judge"]
    assert model_options(installed_checkpoints(roots)) == [
        "tiny-qwen",
        "judge",
        "Qwen/Qwen2.5-VL-7B-Instruct (download)",
        "Qwen/Qwen2.5-VL-3B-Instruct (download)",
    ]
    checkpoint(roots[1] / "Qwen2.5-VL-7B-Instruct")  # once downloaded, a preset is listed by its folder name
    assert model_options(installed_checkpoints(roots)) == [
        "tiny-qwen",
        "Qwen2.5-VL-7B-Instruct",
        "judge",
        "Qwen/Qwen2.5-VL-3B-Instruct (download)",
    ]
    assert model_options([]) == ["Qwen/Qwen2.5-VL-7B-Instruct (download)", "Qwen/Qwen2.5-VL-3B-Instruct (download)"]


def test_installed_folders_load_from_the_folder_that_has_them(roots):
    assert resolve("tiny-qwen", "", roots) == ResolvedModel(roots[0] / "tiny-qwen")
    assert resolve("judge", "  ", roots) == ResolvedModel(roots[1] / "judge")
    assert not resolve("judge", "", roots).needs_download


@pytest.mark.parametrize(
    "choice", ["Qwen/Qwen2.5-VL-3B-Instruct (download)", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-3B-Instruct"]
)
def test_a_preset_downloads_into_the_first_folder_until_it_is_there(roots, choice):
    resolved = resolve(choice, "", roots)
    assert resolved == ResolvedModel(roots[0] / "Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")
    assert resolved.needs_download
    checkpoint(roots[1] / "Qwen2.5-VL-3B-Instruct")  # a saved "(download)" choice keeps working once installed
    assert resolve(choice, "", roots) == ResolvedModel(roots[1] / "Qwen2.5-VL-3B-Instruct")


def test_hub_id_text_wins_when_filled_in(roots, tmp_path):
    assert resolve("tiny-qwen", "someone/my-judge", roots) == ResolvedModel(roots[0] / "my-judge", "someone/my-judge")
    assert resolve("tiny-qwen", "other/judge", roots) == ResolvedModel(roots[1] / "judge")  # installed by name
    folder = checkpoint(tmp_path / "anywhere" / "ckpt")
    assert resolve("tiny-qwen", str(folder), roots) == ResolvedModel(folder)
    assert resolve(str(folder), "", roots) == ResolvedModel(folder)  # API prompts may pass a path as model


def test_workflows_saved_by_release_0_1_keep_their_meaning(roots):
    # 0.1 saved its hub_id default next to every choice: the chosen folder still loads
    assert resolve("tiny-qwen", "Qwen/Qwen2.5-VL-7B-Instruct", roots) == ResolvedModel(roots[0] / "tiny-qwen")
    assert resolve(LEGACY_HUB_CHOICE, "someone/my-judge", roots).hub_id == "someone/my-judge"
    assert resolve(LEGACY_HUB_CHOICE, "Qwen/Qwen2.5-VL-7B-Instruct", roots).hub_id == "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.mark.parametrize(
    "model, hub_id, message",
    [
        ("gone", "", "model: 'gone' is not in models/reward_models (installed: tiny-qwen, judge); refresh the node"),
        (" ", "", "model: pick a reward model in the list"),
        (LEGACY_HUB_CHOICE, " ", "hub_id: type a hub id such as Qwen/Qwen2.5-VL-3B-Instruct"),
        ("tiny-qwen", "not a hub id", "hub_id: 'not a hub id' is neither a checkpoint folder nor a hub id"),
        ("tiny-qwen", "../escape/x", "hub_id: '../escape/x' is neither a checkpoint folder nor a hub id"),
    ],
)
def test_bad_choices_name_the_input_and_the_fix(roots, model, hub_id, message):
    with pytest.raises(ValueError) as err:
        resolve(model, hub_id, roots)
    assert str(err.value).startswith(message)


def test_no_registered_folder_is_explained(tmp_path):
    with pytest.raises(ValueError, match="no reward_models folder is registered"):
        resolve("Qwen/Qwen2.5-VL-3B-Instruct (download)", "", [])
