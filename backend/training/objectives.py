"""The RewardDance training objectives, built from the scorer's own prompts so a trained model scores
correctly with the same settings.

- pairwise generative: both orders of every pair (image 1 = reference, image 2 = candidate); the target
  is the answer word ("Yes" when the candidate is the chosen image, else "No") at the verdict position,
  next-token cross-entropy; with chain of thought the reason text is a target too (after the verdict in
  answer-first, before "Final answer: <verdict>" in reasoning-first).
- pointwise generative: Bradley-Terry on the two images' yes-vs-no logits, plus a small-weight
  cross-entropy labelling the chosen image "Yes" and the rejected one "No".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..media import Visual, load_visual_file
from ..scoring.answer import AnswerTokens, first_token_id
from ..scoring.config import ScoringConfig
from ..scoring.prompts import VERDICT_MARKER, Query, pairwise_query, pointwise_query
from .data import PreferencePair


@dataclass(eq=False)
class Example:
    """One training sequence: a query whose continuation holds the target text, and how many target tokens."""

    query: Query
    verdict_only: bool = False  # the target is just the answer word: train its first token, the one the scorer reads
    targets: int = 0  # filled in when tokenised


def verdict_text(config: ScoringConfig, yes: bool) -> str:
    """The answer word the scorer reads for a yes / no verdict."""
    return config.answer.strip() if yes else config.negative_word


def target_text(config: ScoringConfig, yes: bool, reason: str | None) -> str:
    """What the model is taught to write after the prompt, following the chain-of-thought mode."""
    verdict = verdict_text(config, yes)
    if config.cot == "answer_first" and reason:
        return f"{verdict}. {reason.strip()}"
    if config.cot == "reasoning_first":
        return f"{(reason or '').strip()}\n{VERDICT_MARKER} {verdict.lower()}".lstrip()
    return verdict


class VisualCache:
    """Decode each file once per training run (pairs reuse their images in both orders)."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self._items: dict[str, Visual] = {}

    def __call__(self, path: str) -> Visual:
        if path not in self._items:
            if len(self._items) >= self.limit:
                self._items.pop(next(iter(self._items)))
            self._items[path] = load_visual_file(path)
        return self._items[path]


def pairwise_examples(pair: PreferencePair, config: ScoringConfig, load: VisualCache) -> list[Example]:
    """Both orders of a (non-tie) pair; the target says whether image 2 is the chosen one."""
    if pair.tie:
        return []
    cfg = config if pair.criteria is None else config.with_overrides(criteria=pair.criteria)
    chosen, rejected = load(pair.chosen), load(pair.rejected)
    out = []
    for reference, candidate, yes in ((rejected, chosen, True), (chosen, rejected, False)):
        q = pairwise_query(reference, candidate, pair.prompt, cfg)
        q.continuation = target_text(cfg, yes, pair.reason)
        out.append(Example(q, verdict_only=q.continuation == verdict_text(cfg, yes)))
    return out


def pointwise_examples(pair: PreferencePair, config: ScoringConfig, load: VisualCache) -> list[Example]:
    """[chosen, rejected] pointwise queries whose continuation is the answer word (yes / no)."""
    cfg = config if pair.criteria is None else config.with_overrides(criteria=pair.criteria)
    out = []
    for path, yes in ((pair.chosen, True), (pair.rejected, False)):
        q = pointwise_query(load(path), pair.prompt, cfg)
        q.continuation = verdict_text(cfg, yes)
        out.append(Example(q, verdict_only=True))
    return out


def tokenised(scorer: Any, examples: list[Example]) -> list[Any]:
    """Prepared queries (prompt + target tokens) with each example's number of target tokens set."""
    for e in examples:
        if e.verdict_only:  # a word the tokenizer splits ("N", "o") is read by its first token only
            e.query.continuation = scorer.tokenizer.decode([first_token_id(scorer.tokenizer, e.query.continuation)])
    prepared = scorer.prepare([e.query for e in examples])
    for e in examples:
        e.targets = scorer.continuation_tokens(e.query)
        if e.targets < 1:
            raise ValueError(f"the target text {e.query.continuation!r} adds no tokens after the prompt")
    return prepared


def sequence_loss(scorer: Any, prepared: list[Any], examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean next-token cross-entropy over every target token, logits at each verdict-or-first-target position)."""
    keep = max(e.targets for e in examples) + 1
    logits = scorer.position_logits(prepared, keep)  # [B, keep, V]
    losses, first = [], []
    for b, (p, e) in enumerate(zip(prepared, examples)):
        pred = logits[b, keep - 1 - e.targets : keep - 1]  # positions predicting the target tokens
        target = p.input_ids[-e.targets :]
        losses.append(F.cross_entropy(pred, target, reduction="sum"))
        first.append(pred[0])
    return torch.stack(losses).sum() / sum(e.targets for e in examples), torch.stack(first)


def pairwise_loss(scorer: Any, examples: list[Example]) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the pairwise targets; also the share of verdicts the model already gets right."""
    prepared = tokenised(scorer, examples)
    loss, first = sequence_loss(scorer, prepared, examples)
    target_first = torch.stack([p.input_ids[-e.targets] for p, e in zip(prepared, examples)])
    correct = (first.argmax(-1) == target_first).float().mean()
    return loss, {"token_accuracy": float(correct)}


def pointwise_loss(
    scorer: Any, examples: list[Example], tokens: AnswerTokens, ce_weight: float
) -> tuple[torch.Tensor, dict]:
    """Bradley-Terry on s = logit(yes) - logit(no) of chosen vs rejected, plus ce_weight x yes/no cross-entropy."""
    prepared = tokenised(scorer, examples)
    ce, first = sequence_loss(scorer, prepared, examples)
    yes = torch.logsumexp(first[:, list(tokens.yes_ids)], -1)
    no = torch.logsumexp(first[:, list(tokens.no_ids)], -1)
    s = (yes - no).view(-1, 2)  # rows: [chosen, rejected]
    bt = -F.logsigmoid(s[:, 0] - s[:, 1]).mean()
    return bt + ce_weight * ce, {
        "bt": float(bt.detach()),
        "ce": float(ce.detach()),
        "pair_accuracy": float((s[:, 0] > s[:, 1]).float().mean()),
    }
