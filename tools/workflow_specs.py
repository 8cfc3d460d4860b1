"""Every shipped workflow as a spec (nodes, widget values by input name, links, notes), by file name;
tools/build_workflows.py turns each into ComfyUI's UI format and its API-format twin."""

from __future__ import annotations

from workflow_nodes import N
from workflows_scoring import (
    best_of_n_flux,
    best_of_n_sdxl,
    best_of_n_wan_video,
    remote_backend_scoring,
    score_images,
    tournament_with_reference,
)
from workflows_steering import noise_search_flux, noise_search_sdxl, reward_lora_training_sd15

WORKFLOWS = {
    "reward_lora_training_sd15": reward_lora_training_sd15,
    "best_of_n_sdxl": best_of_n_sdxl,
    "best_of_n_flux": best_of_n_flux,
    "best_of_n_wan_video": best_of_n_wan_video,
    "tournament_with_reference": tournament_with_reference,
    "remote_backend_scoring": remote_backend_scoring,
    "score_images": score_images,
    "noise_search_sdxl": noise_search_sdxl,
    "noise_search_flux": noise_search_flux,
}


def specs() -> dict[str, list[N]]:
    """Every shipped workflow by file name."""
    return {name: make() for name, make in WORKFLOWS.items()}
