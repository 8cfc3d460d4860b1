"""Schema pieces and UI data several nodes share."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui


def prompt_input(placeholder: str = "the prompt the images were generated from") -> io.String.Input:
    """The generation-prompt text box (named `text`: output nodes reserve the name `prompt`)."""
    return io.String.Input("text", multiline=True, default="", placeholder=placeholder)


def scored_outputs() -> list:
    """Outputs of the scoring nodes: per-item scores (a list), a ranked summary and a labelled preview."""
    return [
        io.Float.Output(display_name="scores", is_output_list=True),
        io.String.Output(display_name="summary"),
        io.Image.Output(display_name="preview"),
    ]


def preview_ui(cls: type, images: Any, rows: list[dict]) -> dict:
    """Preview images plus `rewarddance_scores` rows ({index, score, rank, ...}) the web extension draws."""
    data = ui.PreviewImage(images, cls=cls).as_dict()
    data["rewarddance_scores"] = rows
    return data
