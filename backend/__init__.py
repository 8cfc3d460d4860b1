"""The RewardDance engine: load a chat VLM as a generative reward model and score images and videos.

Heavy imports (torch, transformers) happen on first attribute access, so `import rewarddance` stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "RewardModel": "reward_model",
    "ScoringConfig": "scoring.config",
    "FewShotExample": "scoring.prompts",
    "CRITERIA_PRESETS": "scoring.criteria",
    "ScoreResult": "scoring.results",
    "RankResult": "scoring.results",
    "TournamentResult": "scoring.results",
    "VisualOptions": "vlm.base",
    "load_vlm": "vlm.loading",
    "Image": "media",
    "Video": "media",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import engine symbols lazily."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rewarddance.backend' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return getattr(module, name)
