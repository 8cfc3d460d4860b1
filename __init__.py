"""RewardDance for ComfyUI: generative (VLM P("yes")) reward models for image and video generation.

This file is both the ComfyUI node-pack entry and the root of the pip package ``rewarddance``.
It imports nothing heavy (no torch, no transformers, no ComfyUI) so that ComfyUI's scan, ``pip`` users
and the tests can import it anywhere; the engine lives in ``backend/`` and the nodes in ``nodes/``, both
loaded lazily. ComfyUI calls ``comfy_entrypoint`` (V3 API); there is deliberately no NODE_CLASS_MAPPINGS,
whose presence would make ComfyUI take the V1 path and ignore the entry point.
"""

__version__ = "0.1.0"

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI's V3 entry: the extension listing the RewardDance nodes."""
    from .nodes import RewardDanceExtension

    return RewardDanceExtension()


__all__ = ["__version__", "WEB_DIRECTORY", "comfy_entrypoint"]
