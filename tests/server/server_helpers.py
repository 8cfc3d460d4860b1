"""Settings shared by the server tests."""

from __future__ import annotations

from rewarddance.backend.server.settings import ModelSpec, ServerSettings


def tiny_settings(tiny_dirs, **kw) -> ServerSettings:
    """Server settings with the tiny Qwen2.5-VL checkpoint as `qwen` (fp32, CPU)."""
    models = {"qwen": ModelSpec("qwen", str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu")}
    return ServerSettings(models=models, **kw)
