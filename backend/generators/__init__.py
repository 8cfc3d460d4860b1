"""Generators: what a noise search or an RL trainer needs from a denoiser (`protocol.py`), the shared
samplers (`sampling.py`), and adapters (`tiny_flow.py`; diffusers and ComfyUI adapters plug in the same way)."""
