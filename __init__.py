"""RewardDance for ComfyUI: generative (VLM P("yes")) reward models for image and video generation.

This file is both the ComfyUI node-pack entry and the root of the pip package ``rewarddance``.
It imports nothing heavy (no torch, no transformers) so that ComfyUI's scan, ``pip`` users and the
tests can import it anywhere; the engine lives in ``backend/`` and loads lazily.
"""

__version__ = "0.1.0"

# ComfyUI reads these; the node classes arrive with the node-pack work (nodes/), so the mappings are
# empty for now and ComfyUI loads the pack without registering nodes.
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["__version__", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
