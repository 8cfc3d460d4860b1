"""Optional packages: imported only where a feature needs them (so a missing one never breaks the pack's import),
with one message naming the feature and exactly what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> (pip package, the rewarddance extra that brings it)
OPTIONAL = {
    "peft": ("peft", "train"),
    "diffusers": ("diffusers", "search"),
    "av": ("av", "video"),
    "skimage": ("scikit-image", "demo"),
    "yaml": ("pyyaml", "yaml"),
}
IN_REQUIREMENTS = {"peft"}  # the optional packages requirements.txt (what ComfyUI-Manager installs) lists
REQUIREMENTS_HINT = "pip install -r custom_nodes/ComfyUI-RewardDance/requirements.txt"


class MissingDependency(ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


def require(module: str, feature: str) -> ModuleType:
    """Import the optional `module` for `feature`, or raise MissingDependency naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package, extra = OPTIONAL.get(module, (module, None))
        pip_extra = f' or `pip install "rewarddance[{extra}]"`' if extra else ""
        comfy = f" (for ComfyUI, in ComfyUI's environment: `{REQUIREMENTS_HINT}`)" if module in IN_REQUIREMENTS else ""
        raise MissingDependency(
            f"{feature} needs the {package} package, which is not installed: `pip install {package}`{pip_extra}{comfy}"
        ) from exc
