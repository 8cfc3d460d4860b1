"""`RewardModel`: a chat VLM used as a generative reward model — score, compare, rank, tournament.

    rm = RewardModel.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct", dtype="bf16")
    rm.score(images, "a red fox in the snow").scores          # P("yes") per image, input order
    rm.compare(candidates, reference, "a red fox").scores     # P(candidate beats reference)
    rm.rank(images, "a red fox", top_k=4).indices
    rm.tournament(images, "a red fox").ranking                # pairwise round robin (the paper's references)
    rm.reward(image_tensor, "a red fox")                      # differentiable torch tensor, for RL
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .media import to_visuals
from .scoring.answer import AnswerTokens, yes_probability
from .scoring.config import ScoringConfig, default_batch_tokens
from .scoring.prompts import VERDICT_MARKER, FewShotExample, Query, pairwise_query, pointwise_query
from .scoring.results import RankResult, ScoreResult, TournamentResult
from .scoring.scorer import Scorer
from .vlm.base import VisualOptions
from .vlm.loading import LoadedVLM, load_vlm


class RewardModel:
    """A loaded VLM plus scoring settings; every method takes per-call overrides of `ScoringConfig` fields."""

    def __init__(self, vlm: LoadedVLM, config: ScoringConfig | None = None):
        self.vlm = vlm
        self.config = (config or ScoringConfig()).validate()
        self.scorer = Scorer(vlm)

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        dtype: str | torch.dtype | None = "auto",
        device: str | None = "auto",
        attn_implementation: str | None = None,
        device_map: str | dict | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        max_frames: int = 32,
        fps: float = 2.0,
        trust_remote_code: bool = False,
        **scoring: Any,
    ) -> "RewardModel":
        """Load a checkpoint directory or hub id; remaining keywords are `ScoringConfig` fields."""
        options = VisualOptions(min_pixels=min_pixels, max_pixels=max_pixels, video_max_pixels=video_max_pixels,
                                max_frames=max_frames, fps=fps)
        options.validate()
        config = ScoringConfig().with_overrides(**scoring)
        vlm = load_vlm(model, dtype=dtype, device=device, attn_implementation=attn_implementation,
                       device_map=device_map, options=options, trust_remote_code=trust_remote_code)
        return cls(vlm, config)

    # --- settings -----------------------------------------------------------------------------------------
    def settings(self, overrides: dict[str, Any]) -> ScoringConfig:
        """This model's config with per-call overrides applied and validated."""
        return self.config.with_overrides(**overrides)

    # --- core -------------------------------------------------------------------------------------------------
    def probabilities(self, queries: list[Query], config: ScoringConfig) -> torch.Tensor:
        """P("yes") for each query under `config` (reasoning-first generates the reasoning first)."""
        tokens = AnswerTokens.from_config(self.vlm.tokenizer, config, with_space=config.cot == "reasoning_first")
        prepared = self.scorer.prepare(queries)
        budget = config.max_batch_tokens or default_batch_tokens(self.vlm.device.type)
        logits = self.scorer.last_logits(prepared, budget, config.prefix_reuse, config.min_prefix_tokens)
        return yes_probability(logits, tokens, config.normalize)

    def _run(self, queries: list[Query], config: ScoringConfig, reasons: bool) -> tuple[torch.Tensor, list[str] | None]:
        """Scores (and reasons) for queries, following the chain-of-thought mode."""
        if config.cot == "reasoning_first":
            texts = [self.scorer.generate(q, config.reason_tokens) for q in queries]
            for q, text in zip(queries, texts):
                q.continuation = reasoning_before_verdict(text) + "\n" + VERDICT_MARKER
            return self.probabilities(queries, config), texts
        scores = self.probabilities(queries, config)
        if reasons:
            return scores, [self.scorer.generate(q, config.reason_tokens).strip() for q in queries]
        return scores, None

    # --- public operations ----------------------------------------------------------------------------------
    def reward(self, images: Any, prompt: str | Sequence[str], few_shot: list[FewShotExample] | None = None,
               **overrides: Any) -> torch.Tensor:
        """Pointwise P("yes") as a float32 tensor [N]; differentiable w.r.t. input tensors that require grad."""
        config = self.settings(overrides)
        visuals = to_visuals(images)
        prompts = expand_prompts(prompt, len(visuals))
        queries = [pointwise_query(v, p, config, few_shot) for v, p in zip(visuals, prompts)]
        return self._run(queries, config, reasons=False)[0]

    def score(self, images: Any, prompt: str | Sequence[str], few_shot: list[FewShotExample] | None = None,
              reasons: bool = False, **overrides: Any) -> ScoreResult:
        """Pointwise scores in input order (files, PIL, IMAGE tensors or `Video`s), optional reasons."""
        config = self.settings(overrides)
        visuals = to_visuals(images)
        prompts = expand_prompts(prompt, len(visuals))
        queries = [pointwise_query(v, p, config, few_shot) for v, p in zip(visuals, prompts)]
        with torch.no_grad():
            scores, texts = self._run(queries, config, reasons)
        return ScoreResult(scores.tolist(), texts)

    def compare(self, candidates: Any, reference: Any, prompt: str | Sequence[str],
                few_shot: list[FewShotExample] | None = None, reasons: bool = False, **overrides: Any) -> ScoreResult:
        """Pairwise: P(candidate beats `reference`) for each candidate (reference = image 1)."""
        config = self.settings(overrides)
        visuals = to_visuals(candidates, "candidates")
        ref = to_visuals(reference, "reference")
        if len(ref) != 1:
            raise ValueError(f"reference: pass exactly one reference image or video, got {len(ref)}")
        prompts = expand_prompts(prompt, len(visuals))
        queries = [pairwise_query(ref[0], v, p, config, few_shot) for v, p in zip(visuals, prompts)]
        with torch.no_grad():
            scores, texts = self._run(queries, config, reasons)
        return ScoreResult(scores.tolist(), texts)

    def rank(self, images: Any, prompt: str | Sequence[str], top_k: int | None = None,
             few_shot: list[FewShotExample] | None = None, **overrides: Any) -> RankResult:
        """Pointwise ranking: the top-k indices (best first) and their scores."""
        visuals = to_visuals(images)
        top_k = check_top_k(top_k, len(visuals))
        result = self.score(visuals, prompt, few_shot=few_shot, **overrides)
        order = sorted(range(len(visuals)), key=lambda i: (-result.scores[i], i))[:top_k]
        return RankResult(order, [result.scores[i] for i in order], result.scores)

    def tournament(self, candidates: Any, prompt: str, **overrides: Any) -> TournamentResult:
        """Round robin: every candidate against every other as reference; rank by wins, then mean P."""
        visuals = to_visuals(candidates, "candidates")
        n = len(visuals)
        if n < 2:
            raise ValueError(f"candidates: a tournament needs at least 2 candidates, got {n}")
        config = self.settings(overrides)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        queries = [pairwise_query(visuals[i], visuals[j], prompt, config) for i, j in pairs]
        with torch.no_grad():
            probs = self._run(queries, config, reasons=False)[0].tolist()
        matrix = [[0.5] * n for _ in range(n)]
        for (i, j), p in zip(pairs, probs):
            matrix[i][j] = p
        wins = [sum(1 for i in range(n) if i != j and matrix[i][j] > 0.5) for j in range(n)]
        mean = [sum(matrix[i][j] for i in range(n) if i != j) / (n - 1) for j in range(n)]
        ranking = sorted(range(n), key=lambda j: (-wins[j], -mean[j], j))
        return TournamentResult(wins, mean, ranking, matrix)


def reasoning_before_verdict(text: str) -> str:
    """The generated reasoning up to (not including) a verdict line the model may already have written."""
    lower = text.lower()
    cut = lower.find(VERDICT_MARKER.lower())
    return (text[:cut] if cut >= 0 else text).rstrip()


def expand_prompts(prompt: str | Sequence[str], n: int) -> list[str]:
    """One prompt per item: a single string is shared; a list must have one prompt per item."""
    if isinstance(prompt, str):
        return [prompt] * n
    if isinstance(prompt, Sequence) and all(isinstance(p, str) for p in prompt):
        if len(prompt) != n:
            raise ValueError(f"prompt: got {len(prompt)} prompts for {n} images; pass one prompt or one per image")
        return list(prompt)
    raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")


def check_top_k(top_k: int | None, n: int) -> int:
    """Validate top_k (None = all)."""
    if top_k is None:
        return n
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return min(top_k, n)


__all__ = ["RewardModel"]
