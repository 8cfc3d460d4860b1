"""Socket types and node categories shared by the pack's nodes."""

from comfy_api.latest import io

RewardModelType = io.Custom("REWARD_MODEL")
CriteriaType = io.Custom("REWARD_CRITERIA")
CATEGORY = "RewardDance"  # the loaders; the other nodes sit in the sub-categories below
SCORING = f"{CATEGORY}/scoring"
SELECTION = f"{CATEGORY}/selection"
SEARCH = f"{CATEGORY}/search"
TRAINING = f"{CATEGORY}/training"
