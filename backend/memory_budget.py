"""Whether the models a node holds at once fit on one device, checked before any of them loads: each model needs
its full size there, or, when its weights can stream (the reward model under ComfyUI's partial loading), only
room for its largest layers; too little memory is refused up front with the numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One model a node holds: its name, its weight bytes and the least of them it needs on the device."""

    name: str
    full_bytes: int
    minimum_bytes: int


def gigabytes(n: int) -> str:
    """Bytes as a person reads them (GB = 2**30 bytes, one decimal)."""
    return f"{n / 2**30:.1f} GB"


def describe(part: Part) -> str:
    """'<name> 3.2 GB', or '<name> 0.4 GB of 16.0 GB (the rest streams)'."""
    if part.minimum_bytes < part.full_bytes:
        return f"{part.name} {gigabytes(part.minimum_bytes)} of {gigabytes(part.full_bytes)} (the rest streams)"
    return f"{part.name} {gigabytes(part.full_bytes)}"


def check_fits(parts: Sequence[Part], budget: int, device: str, what: str) -> None:
    """ValueError naming `what`, the parts and the numbers when their minimum bytes exceed `budget` on `device`."""
    needed = sum(p.minimum_bytes for p in parts)
    if needed <= budget:
        return
    raise ValueError(
        f"{what}: needs at least {gigabytes(needed)} on {device} ({', '.join(describe(p) for p in parts)}), but "
        f"ComfyUI can use {gigabytes(budget)} there; load a smaller reward model (e.g. Qwen/Qwen2.5-VL-3B-Instruct) "
        "or MODEL, or put the reward model on another device (Load Reward Model's device input)"
    )
