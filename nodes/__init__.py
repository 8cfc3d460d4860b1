"""The ComfyUI side of RewardDance: V3 nodes (thin; the logic is in backend/node_logic.py), the model
folder, ComfyUI memory management for reward models, and the backend's routes under /rewarddance/."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from . import service
from .loaders import RemoteRewardModel, RewardModelLoader
from .rl_training import RewardLoraTrainer
from .scoring import CompareToReference, RewardCriteria, ScoreImages, ScoreVideo
from .search import RewardNoiseSearch
from .selection import BestOfN, Tournament

folder_paths.add_model_folder_path("reward_models", os.path.join(folder_paths.models_dir, "reward_models"))

NODES: list[type[io.ComfyNode]] = [
    RewardModelLoader,
    RemoteRewardModel,
    RewardCriteria,
    ScoreImages,
    ScoreVideo,
    CompareToReference,
    BestOfN,
    Tournament,
    RewardNoiseSearch,
    RewardLoraTrainer,
]


class RewardDanceExtension(ComfyExtension):
    """Lists the pack's nodes for ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        service.attach()
        return NODES
