"""Reward functions for outside RL code: Flow-GRPO's `fn(images, prompts, metadata) -> (scores, info)`.

    fn = reward_function("path/to/judge", dtype="bf16")            # or a RewardModel, or "http://host:8765"
    scores, info = fn(images, prompts, metadata)                     # scores: float32 numpy array [B]

`reward_function` scores pointwise (P("yes") for the prompt) or pairwise (P(beats the reference), the reference
read from each image's metadata or looked up by prompt); `win_rate_reward` gives each image its win rate against
the other images of its prompt group (Pref-GRPO). Both also return torch tensors for DanceGRPO-style loops
(`.rewards(images, prompts)`). A server is reached through `RewardClient` (JSON bodies, never pickle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..ranking import symmetric_win_rates
from ..reward_model import LOADING_FIELDS, RewardModel, compare_queries
from ..scoring.config import ScoringConfig
from .inputs import batch_size_of, image_batch, load_judge, metadata_list, prompt_list, reference_image, take

MODES = ("pointwise", "pairwise")


@dataclass
class RewardFunction:
    """A Flow-GRPO-style reward: called with (images, prompts, metadata), returns (scores [B], info)."""

    model: Any  # a RewardModel or a RewardClient
    mode: str = "pointwise"
    reference_key: str = "reference"
    references: Mapping[str, Any] | None = None  # prompt -> reference, for prompts whose metadata has none
    batch_size: int | None = None  # images per engine call (None: the whole call at once)
    options: dict[str, Any] = field(default_factory=dict)  # ScoringConfig fields (criteria, question, ...)

    def __call__(
        self, images: Any, prompts: Any, metadata: Any = None, only_strict: bool = True
    ) -> tuple[np.ndarray, dict]:
        """Scores as float32 numpy [B] and an info dict (`only_strict` is Flow-GRPO's GenEval flag, ignored)."""
        batch = image_batch(images)
        n = batch_size_of(batch)
        texts = prompt_list(prompts, n)
        refs = self.reference_per_image(metadata, texts) if self.mode == "pairwise" else None
        scores: list[float] = []
        calls = 0
        for start in range(0, n, self.batch_size or n):
            index = list(range(start, min(n, start + (self.batch_size or n))))
            part = take(batch, index)
            part_texts = [texts[i] for i in index]
            if refs is None:
                scores += self.model.score(part, part_texts, **self.options).scores
                calls += 1
            else:
                values, used = self.pairwise(part, [refs[i] for i in index], part_texts)
                scores += values
                calls += used
        return np.asarray(scores, dtype=np.float32), {"mode": self.mode, "calls": calls}

    def rewards(self, images: Any, prompts: Any, metadata: Any = None, device: Any = None) -> torch.Tensor:
        """The scores as a float32 torch tensor [B] (on `device`), for loops that collect reward tensors."""
        return torch.as_tensor(self(images, prompts, metadata)[0], device=device)

    def reference_per_image(self, metadata: Any, prompts: list[str]) -> list[Any]:
        """Each image's reference: its metadata's `reference_key`, else `references[prompt]`."""
        refs = []
        for i, (meta, prompt) in enumerate(zip(metadata_list(metadata, len(prompts)), prompts)):
            if meta.get(self.reference_key) is not None:
                refs.append(meta[self.reference_key])
            elif self.references is not None and prompt in self.references:
                refs.append(self.references[prompt])
            else:
                raise ValueError(
                    f"metadata[{i}]: no {self.reference_key!r} for prompt {prompt!r}; pairwise mode needs a "
                    f"reference in each image's metadata, or references={{prompt: image}} when building the reward"
                )
        return refs

    def pairwise(self, candidates: Any, refs: list[Any], prompts: list[str]) -> tuple[list[float], int]:
        """P(candidate beats its reference) for one engine batch, and how many engine calls it took."""
        groups = reference_groups(refs)
        refs = list(refs)
        for members in groups:
            refs[members[0]] = reference_image(refs[members[0]], f"metadata[{members[0]}].{self.reference_key}")
        if isinstance(self.model, RewardModel):
            return local_pairwise(self.model, candidates, refs, prompts, groups, self.options), 1
        scores = [0.0] * len(refs)
        for members in groups:
            part = take(candidates, members)
            result = self.model.compare(part, refs[members[0]], [prompts[i] for i in members], **self.options)
            for i, s in zip(members, result.scores):
                scores[i] = s
        return scores, len(groups)


@dataclass
class WinRateFunction:
    """Pref-GRPO's reward: each image's win rate against the other images of its prompt group.

    For two images a, b of one prompt, b's win probability is the mean of P(b beats a) (a as reference) and
    1 - P(a beats b) (b as reference), so a pair's probabilities sum to 1 and a group's rewards average 0.5.
    The score is b's mean win probability over its group, or (`hard`) the fraction of the group it beats
    (a win probability above 0.5; exactly 0.5 counts half). An image alone in its group scores 0.5."""

    model: Any
    hard: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(
        self, images: Any, prompts: Any, metadata: Any = None, only_strict: bool = True
    ) -> tuple[np.ndarray, dict]:
        """Win rates as float32 numpy [B] and an info dict (the groups and both win rates)."""
        batch = image_batch(images)
        texts = prompt_list(prompts, batch_size_of(batch))
        soft = np.full(len(texts), 0.5, dtype=np.float32)
        hard = soft.copy()
        groups = prompt_groups(texts)
        for members in groups:
            if len(members) < 2:
                continue
            matrix = self.model.tournament(take(batch, members), texts[members[0]], **self.options).matrix
            group_soft, group_hard = symmetric_win_rates(matrix)  # the one reading, shared with GroupWinRate
            soft[members], hard[members] = group_soft, group_hard
        info = {"groups": groups, "win_probability": soft.copy(), "win_fraction": hard.copy()}
        return (hard if self.hard else soft), info

    def rewards(self, images: Any, prompts: Any, metadata: Any = None, device: Any = None) -> torch.Tensor:
        """The win rates as a float32 torch tensor [B] (on `device`)."""
        return torch.as_tensor(self(images, prompts, metadata)[0], device=device)


def reward_function(
    model: Any,
    mode: str = "pointwise",
    *,
    reference_key: str = "reference",
    references: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    server_model: str | None = None,
    token: str | None = None,
    **options: Any,
) -> RewardFunction:
    """A Flow-GRPO-style reward function over a judge (RewardModel, RewardClient, checkpoint path or server URL).

    `options` are `ScoringConfig` fields (criteria, question, normalize, ...) and, for a path, the loading
    keywords of `RewardModel.from_pretrained` (dtype, device, judge, ...)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    check_batch_size(batch_size)
    if not isinstance(reference_key, str) or not reference_key:
        raise ValueError(f"reference_key: expected a non-empty string, got {reference_key!r}")
    if references is not None and not isinstance(references, Mapping):
        raise ValueError(f"references: expected a dict {{prompt: reference image}}, got {type(references).__name__}")
    loading, scoring = split_options(options)
    return RewardFunction(
        load_judge(model, server_model, token, loading), mode, reference_key, references, batch_size, scoring
    )


def win_rate_reward(
    model: Any, *, hard: bool = False, server_model: str | None = None, token: str | None = None, **options: Any
) -> WinRateFunction:
    """Pref-GRPO's group win-rate reward over a judge (RewardModel, RewardClient, checkpoint path or server URL)."""
    if not isinstance(hard, bool):
        raise ValueError(f"hard: expected True or False, got {hard!r}")
    loading, scoring = split_options(options)
    return WinRateFunction(load_judge(model, server_model, token, loading), hard, scoring)


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loading keywords, scoring options), the scoring ones validated now (before any model loads)."""
    loading = {k: v for k, v in options.items() if k in LOADING_FIELDS or k == "trust_remote_code"}
    scoring = {k: v for k, v in options.items() if k not in loading}
    ScoringConfig().with_overrides(**scoring)
    return loading, scoring


def check_batch_size(batch_size: int | None) -> None:
    """None or a positive integer, else ValueError naming batch_size."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: expected a positive integer (or None for the whole call), got {batch_size!r}")


def reference_groups(refs: Sequence[Any]) -> list[list[int]]:
    """Indices of the images sharing a reference (the same path string or the same object), in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i, ref in enumerate(refs):
        groups.setdefault(ref if isinstance(ref, str) else id(ref), []).append(i)
    return list(groups.values())


def prompt_groups(prompts: Sequence[str]) -> list[list[int]]:
    """Indices of the images of each distinct prompt, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    return list(groups.values())


def local_pairwise(
    model: RewardModel,
    candidates: Any,
    refs: list[Any],
    prompts: list[str],
    groups: list[list[int]],
    options: dict[str, Any],
) -> list[float]:
    """P(candidate beats its reference) for every candidate in one engine call, whatever the references."""
    config = model.settings(options)
    order = [i for members in groups for i in members]
    queries = []
    for members in groups:
        queries += compare_queries(take(candidates, members), refs[members[0]], [prompts[i] for i in members], config)
    with model.use(), torch.no_grad():
        probs = model.run(queries, config)[0].tolist()
    scores = [0.0] * len(refs)
    for i, p in zip(order, probs):
        scores[i] = p
    return scores
