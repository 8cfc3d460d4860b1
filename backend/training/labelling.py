"""Preference pairs from scored images: a seeded pairing of the images of each prompt, the higher score chosen.

Scores come from anywhere (a Python judge, a reward model, human ratings); `pairs_from_scores` pairs the images
of the same prompt (each round a random disjoint pairing, no pair repeated), marks pairs whose scores differ by
at most `margin` as ties, and `split_by_image` holds out whole images so no eval image is seen in training.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from ..media import load_image_file, pil_to_tensor
from .data import PreferencePair


class LabelError(ValueError):
    """Scores or settings that cannot be turned into pairs; the message names the input and the fix."""


def pairing(n: int, rounds: int, rng: random.Random) -> list[tuple[int, int]]:
    """`rounds` random disjoint pairings of indices 0..n-1, never repeating a pair (later rounds may pair fewer)."""
    used: set[frozenset[int]] = set()
    out = []
    for _ in range(rounds):
        free = list(range(n))
        rng.shuffle(free)
        while len(free) > 1:
            a = free.pop(0)
            b = next((b for b in free if frozenset((a, b)) not in used), None)
            if b is not None:
                free.remove(b)
                used.add(frozenset((a, b)))
                out.append((a, b))
    return out


def group_by_prompt(prompts: Sequence[str], indices: Sequence[int] | None = None) -> dict[str, list[int]]:
    """Indices of the images of each prompt, prompts in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i in range(len(prompts)) if indices is None else indices:
        groups.setdefault(prompts[i], []).append(i)
    return groups


def pairs_from_scores(
    files: Sequence[str],
    prompts: Sequence[str],
    scores: Sequence[float],
    margin: float = 0.0,
    per_image: int = 1,
    seed: int = 0,
) -> list[PreferencePair]:
    """Pairs of images of the same prompt, the higher score chosen; |score difference| <= margin is a tie."""
    _check_inputs(files, prompts, scores, margin, per_image)
    rng = random.Random(seed)
    pairs = []
    for prompt, group in group_by_prompt(prompts).items():
        for a, b in pairing(len(group), per_image, rng):
            i, j = group[a], group[b]
            if scores[j] > scores[i]:
                i, j = j, i
            pairs.append(PreferencePair(prompt, files[i], files[j], tie=scores[i] - scores[j] <= margin))
    return pairs


def _check_inputs(
    files: Sequence[str], prompts: Sequence[str], scores: Sequence[float], margin: float, per_image: int
) -> None:
    """Raise a `LabelError` for mismatched lengths, repeated files, non-finite scores or bad settings."""
    if not len(files) == len(prompts) == len(scores):
        raise LabelError(f"got {len(files)} files, {len(prompts)} prompts and {len(scores)} scores; give one each")
    if len(set(files)) != len(files):
        raise LabelError("a file is listed twice; list every image once")
    bad = [f for f, s in zip(files, scores) if not is_finite_number(s)]
    if bad:
        raise LabelError(f"{len(bad)} image(s) have no finite score (e.g. {bad[0]}); score every image with a number")
    if not is_finite_number(margin) or margin < 0:
        raise LabelError(f"margin must be a number >= 0, got {margin!r}")
    if not isinstance(per_image, int) or per_image < 1:
        raise LabelError(f"pairs per image must be an integer >= 1, got {per_image!r}")


def is_finite_number(value: object) -> bool:
    """True for an int or float (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def split_by_image(prompts: Sequence[str], eval_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, eval) image indices: a seeded `eval_fraction` of each prompt's images held out."""
    if not is_finite_number(eval_fraction) or not 0 < eval_fraction < 1:
        raise LabelError(f"eval fraction must be between 0 and 1 (exclusive), got {eval_fraction!r}")
    rng = random.Random(seed)
    train, held = [], []
    for group in group_by_prompt(prompts).values():
        group = list(group)
        rng.shuffle(group)
        n_eval = round(len(group) * eval_fraction)
        held += group[:n_eval]
        train += group[n_eval:]
    return sorted(train), sorted(held)


def relative_to(pairs: Sequence[PreferencePair], pairs_file: str | Path) -> list[PreferencePair]:
    """The pairs with their image paths relative to the folder of `pairs_file` (what load_pairs resolves)."""
    base = Path(pairs_file).resolve().parent
    return [replace(p, chosen=relative_path(p.chosen, base), rejected=relative_path(p.rejected, base)) for p in pairs]


def relative_path(path: str, base: Path) -> str:
    """`path` relative to `base` (POSIX separators), or absolute where no relative path exists (another drive)."""
    full = Path(path).resolve()
    try:
        return Path(os.path.relpath(full, base)).as_posix()
    except ValueError:
        return str(full)


def score_images(reward: Callable, files: Sequence[str], batch_size: int = 8) -> list[float]:
    """Scores of image files from a reward / judge, in batches of consecutive images of the same size."""
    scores: list[float] = []
    for batch in _batches(files, batch_size):
        with torch.no_grad():
            values = reward(torch.stack(batch))
        scores += [float(v) for v in torch.as_tensor(values).reshape(-1).tolist()]
    return scores


def _batches(files: Sequence[str], batch_size: int) -> Iterator[list[torch.Tensor]]:
    """Image tensors [H, W, 3] in [0, 1], up to `batch_size` of one size at a time, in file order."""
    batch: list[torch.Tensor] = []
    for f in files:
        image = pil_to_tensor(load_image_file(f).pil)
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def write_scores(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write score rows as JSONL (one object per image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
