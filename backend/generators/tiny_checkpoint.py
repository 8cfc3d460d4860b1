"""The tiny flow generator as a checkpoint directory: `config.json` (its class name, size, channels, network
width and free-form metadata such as train_steps and seed) next to `model.safetensors`.

`rewarddance tiny-generator` writes one; `load_pipeline`, `rewarddance search --pipeline DIR` and RL configs
(`generator = "DIR"`) load one by path, wherever a diffusers pipeline path is accepted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .tiny_flow import TinyFlowGenerator, TinyVelocityNet

CLASS_NAME = "TinyFlowGenerator"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SHAPE_KEYS = ("size", "channels", "width")  # what rebuilding the network needs
HOW_TO_WRITE = "write one with `rewarddance tiny-generator --out DIR`"


def tiny_generator_config(gen: TinyFlowGenerator, **meta: Any) -> dict[str, Any]:
    """config.json contents of a generator: class name, size, channels and width, then `meta`."""
    clash = sorted(set(meta) & {"_class_name", *SHAPE_KEYS})
    if clash:
        raise ValueError(f"metadata key(s) {', '.join(clash)} are recorded from the generator itself; rename them")
    channels, size, _ = gen.noise_shape
    return {"_class_name": CLASS_NAME, "size": size, "channels": channels, "width": gen.net.width, **meta}


def save_tiny_generator(gen: TinyFlowGenerator, out_dir: str | Path, **meta: Any) -> Path:
    """Write `gen` to `out_dir` (config.json + model.safetensors, overwriting both) and return the directory."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_generator_config(gen, **meta)
    weights = {k: v.detach().cpu().contiguous() for k, v in gen.net.state_dict().items()}
    save_file(weights, str(out / (WEIGHTS_FILE + ".tmp")))
    os.replace(out / (WEIGHTS_FILE + ".tmp"), out / WEIGHTS_FILE)
    (out / (CONFIG_FILE + ".tmp")).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(out / (CONFIG_FILE + ".tmp"), out / CONFIG_FILE)  # last: the directory is complete once it exists
    return out


def read_config(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`/config.json, or None when it is missing or not a JSON object."""
    try:
        data = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_tiny_generator(path: str | Path | None) -> bool:
    """True when `path` is a directory whose config.json names the TinyFlowGenerator class."""
    if path is None or not Path(path).is_dir():
        return False
    config = read_config(Path(path))
    return config is not None and config.get("_class_name") == CLASS_NAME


def check_config(path: Path) -> dict[str, Any]:
    """The validated config.json of a tiny generator directory (ValueError naming the problem otherwise)."""
    if not path.exists():
        raise ValueError(f"tiny generator {str(path)!r} does not exist; {HOW_TO_WRITE}")
    if not path.is_dir():
        raise ValueError(f"tiny generator {str(path)!r} is not a directory; {HOW_TO_WRITE}")
    if not (path / CONFIG_FILE).is_file():
        raise ValueError(f"{str(path)!r} has no {CONFIG_FILE}: neither a tiny generator nor a diffusers pipeline")
    config = read_config(path)
    if config is None:
        raise ValueError(f"{str(path / CONFIG_FILE)!r} is not a JSON object (corrupt?); {HOW_TO_WRITE}")
    if config.get("_class_name") != CLASS_NAME:
        kind = config.get("_class_name") or ", ".join(config.get("architectures") or []) or config.get("model_type")
        raise ValueError(
            f"{str(path / CONFIG_FILE)!r} describes {kind or 'an unknown model'}, not a {CLASS_NAME}: "
            "neither a tiny generator nor a diffusers pipeline (no model_index.json)"
        )
    for key in SHAPE_KEYS:
        if isinstance(config.get(key), bool) or not (isinstance(config.get(key), int) and config[key] >= 1):
            raise ValueError(f"{str(path / CONFIG_FILE)!r}: {key} must be a positive integer, got {config.get(key)!r}")
    return config


def load_tiny_generator(path: str | Path, device: str = "cpu") -> TinyFlowGenerator:
    """The TinyFlowGenerator saved in directory `path` (fp32, on `device`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = check_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"tiny generator {str(path)!r} has no {WEIGHTS_FILE}; {HOW_TO_WRITE}")
    net = TinyVelocityNet(channels=config["channels"], width=config["width"])
    try:
        net.load_state_dict(load_file(str(weights)))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"{str(weights)!r} does not hold the weights its {CONFIG_FILE} describes "
            f"(width {config['width']}, channels {config['channels']}): {str(exc).splitlines()[0]}"
        ) from exc
    return TinyFlowGenerator(net.to(torch.float32), size=config["size"], device=device)
