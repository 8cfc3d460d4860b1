"""Schema pieces and UI data several nodes share."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui

from .types import CriteriaType, RewardModelType

SCORES_TOOLTIP = "one score per item, in input order (P('yes') in [0, 1]); connects to Best of N's scores input"
SUMMARY_TOOLTIP = "the ranking as text, one '#rank  image number: score' line per item (numbered from 1)"


def prompt_input(placeholder: str = "the prompt the images were generated from") -> io.String.Input:
    """The generation-prompt text box (named `text`: output nodes reserve the name `prompt`)."""
    return io.String.Input(
        "text",
        multiline=True,
        default="",
        placeholder=placeholder,
        tooltip="the generation prompt: what the reward model judges the images against",
    )


def reward_model_input(optional: bool = False, tooltip: str | None = None) -> io.Input:
    """The REWARD_MODEL socket (from Load Reward Model or Load Remote Reward Model)."""
    return RewardModelType.Input(
        "reward_model",
        optional=optional,
        tooltip=tooltip or "the judge, from Load Reward Model or Load Remote Reward Model",
    )


def criteria_input() -> io.Input:
    """The optional REWARD_CRITERIA socket."""
    return CriteriaType.Input(
        "criteria", optional=True, tooltip="what to judge, from a Reward Criteria node (default: prompt alignment)"
    )


def scored_outputs() -> list:
    """Outputs of the scoring nodes: per-item scores (a list), a ranked summary and a labelled preview."""
    return [
        io.Float.Output(display_name="scores", is_output_list=True, tooltip=SCORES_TOOLTIP),
        io.String.Output(display_name="summary", tooltip=SUMMARY_TOOLTIP),
        io.Image.Output(display_name="preview", tooltip="the images with each one's rank and score drawn on it"),
    ]


def preview_ui(cls: type, images: Any, rows: list[dict]) -> dict:
    """Preview images plus `rewarddance_scores` rows ({index, name, score, rank, ...}) the web extension draws."""
    data = ui.PreviewImage(images, cls=cls).as_dict()
    data["rewarddance_scores"] = rows
    return data
