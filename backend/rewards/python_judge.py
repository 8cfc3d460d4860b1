"""A user's Python function as a reward: `load_judge("judge.py:score")` or `load_judge("pkg.module:score")`.

The function takes images [B, H, W, 3] float in [0, 1] (a torch tensor) and returns [B] scores (a tensor, a list
or a NumPy array); a `differentiable = True` attribute on the function says it keeps the autograd graph.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from .protocol import Reward

SPEC_HELP = "pass FILE.py:FUNCTION or package.module:FUNCTION"


class JudgeError(ValueError):
    """A judge spec cannot be loaded or its function returned unusable scores; the message names the spec."""


class PythonJudge(Reward):
    """Scores images with a user function, checking that it returns one finite score per image."""

    def __init__(self, fn: Callable, spec: str = "<function>"):
        if not callable(fn):
            raise JudgeError(f"judge {spec!r}: {type(fn).__name__} object is not callable; {SPEC_HELP}")
        self.fn = fn
        self.spec = spec
        self.differentiable = bool(getattr(fn, "differentiable", False))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Scores [B] as a float tensor (on the images' device)."""
        try:
            out = self.fn(images)
        except Exception as exc:
            raise JudgeError(
                f"judge {self.spec!r} failed on a batch of {len(images)} ({type(exc).__name__}: {exc})"
            ) from exc
        return self._check(_as_scores(out, images.device, self.spec), len(images))

    def _check(self, scores: torch.Tensor, batch: int) -> torch.Tensor:
        """`scores` when it holds exactly `batch` finite values."""
        if scores.numel() != batch:
            raise JudgeError(
                f"judge {self.spec!r} returned {scores.numel()} score(s) for {batch} image(s) (shape "
                f"{tuple(scores.shape)}); return one score per image, shape [B]"
            )
        if not bool(torch.isfinite(scores.detach()).all()):
            raise JudgeError(
                f"judge {self.spec!r} returned non-finite scores {scores.detach().tolist()}; fix the judge"
            )
        return scores.reshape(batch)


def _as_scores(out: object, device: torch.device, spec: str) -> torch.Tensor:
    """A judge's output (tensor, list, tuple or NumPy array of numbers) as a float tensor."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out.detach().float()
    try:
        return torch.as_tensor(out, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise JudgeError(
            f"judge {spec!r} returned {type(out).__name__}, not numbers; return [B] scores as a tensor, list "
            f"or NumPy array ({exc})"
        ) from exc


def load_judge(spec: str) -> PythonJudge:
    """The function named by `spec` ("path/to/file.py:function" or "package.module:function") as a reward."""
    if not isinstance(spec, str) or ":" not in spec:
        raise JudgeError(f"judge {spec!r} names no function; {SPEC_HELP} (e.g. judge.py:score)")
    source, _, name = spec.rpartition(":")
    if not source or not name.isidentifier():
        raise JudgeError(f"judge {spec!r}: {name!r} is not a function name; {SPEC_HELP}")
    module = _load_module(source, spec)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise JudgeError(f"judge {spec!r}: {source} defines no {name!r}; functions there: {', '.join(found) or 'none'}")
    return PythonJudge(getattr(module, name), spec)


def _is_file_source(source: str) -> bool:
    """True when the part before the colon is a file path rather than a dotted module name."""
    return source.endswith(".py") or "/" in source or "\\" in source


def _load_module(source: str, spec: str) -> ModuleType:
    """Import the judge's file or module; import failures become a `JudgeError` naming the spec."""
    try:
        return _import_file(source, spec) if _is_file_source(source) else _import_module(source, spec)
    except JudgeError:
        raise
    except Exception as exc:  # the user's module raised while it was imported
        raise JudgeError(f"judge {spec!r}: importing it failed ({type(exc).__name__}: {exc})") from exc


def _import_file(source: str, spec: str) -> ModuleType:
    """Run a judge file as a fresh module."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise JudgeError(f"judge {spec!r}: file {str(path)!r} does not exist; check the path")
    module_spec = importlib.util.spec_from_file_location(f"rewarddance_judge_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _import_module(source: str, spec: str) -> ModuleType:
    """Import a judge module by its dotted name."""
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name and source.startswith(exc.name):
            raise JudgeError(f"judge {spec!r}: no module named {source!r}; {SPEC_HELP}") from exc
        raise
