"""Socket types shared by the pack's nodes."""

from comfy_api.latest import io

RewardModelType = io.Custom("REWARD_MODEL")
CriteriaType = io.Custom("REWARD_CRITERIA")
CATEGORY = "RewardDance"
