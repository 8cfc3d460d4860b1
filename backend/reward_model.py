"""`RewardModel`: a chat VLM used as a generative reward model — score, compare, rank, tournament.

rm = RewardModel.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct", dtype="bf16")
rm.score(images, "a red fox in the snow").scores          # P("yes") per image, input order
rm.compare(candidates, reference, "a red fox").scores     # P(candidate beats reference)
rm.rank(images, "a red fox", top_k=4).indices
rm.tournament(images, "a red fox").ranking                # pairwise round robin (the paper's references)
rm.reward(image_tensor, "a red fox")                      # differentiable torch tensor, for RL
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import torch

from .media import to_visual, to_visuals
from .ranking import check_top_k, check_tournament_size, ranking_order
from .scoring.answer import AnswerTokens, yes_probability
from .scoring.config import ScoringConfig, default_batch_tokens
from .scoring.generation import Sampling, verdict_logits
from .scoring.judges import JUDGES, judge_named, judge_scores
from .scoring.prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, PrefixCache, check_budget
from .scoring.prompts import VERDICT_MARKER, FewShotExample, Query, pairwise_query, pointwise_query
from .scoring.results import Judgements, RankResult, ScoreResult, TournamentResult
from .scoring.scorer import PreparedQuery, Scorer
from .training_record import TRAINING_RECORD, trained_scoring  # noqa: F401  (TRAINING_RECORD: its old home, one release)
from .vlm.base import VisualOptions
from .vlm.loading import LoadedVLM, load_vlm

# The keyword arguments of `RewardModel.from_pretrained` that shape how a model loads (CLI flags of the same
# names, server model specs).
LOADING_FIELDS = (
    "dtype",
    "quantization",
    "device",
    "attn_implementation",
    "device_map",
    "min_pixels",
    "max_pixels",
    "video_max_pixels",
    "max_frames",
    "fps",
)


class RewardModel:
    """A loaded VLM plus scoring settings; every method takes per-call overrides of `ScoringConfig` fields."""

    @property
    def differentiable(self) -> bool:
        """True: `reward()` keeps the autograd graph (noise gradients, ReFL); a remote client or a quantised
        judge (int8 / nf4 bitsandbytes weights) cannot."""
        return getattr(self.vlm, "quantization", "none") == "none"

    def __init__(
        self,
        vlm: LoadedVLM,
        config: ScoringConfig | None = None,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ):
        self.vlm = vlm
        self.config = (config or ScoringConfig()).validate()
        # KV caches of recent shared prefixes (reference images, few-shot sets, criteria), kept across calls
        # within `prefix_cache_bytes` (0 disables); `clear_prefix_cache()` after changing the weights.
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.scorer = Scorer(vlm, self.prefix_cache)
        # reasoning-first verdicts read from the generation's KV cache (False: each judged query runs again in full)
        self.verdicts_from_cache = True
        self._lock = threading.RLock()
        self._depth = 0
        # Called (under the lock) before the model runs; a host such as ComfyUI sets it to move offloaded
        # weights back onto the GPU through its own memory management.
        self.before_use: Callable[[], None] | None = None
        self.after_use: Callable[[], None] | None = None  # e.g. ComfyUI unloading it when asked not to keep it
        self.guard: Callable[[], AbstractContextManager] | None = None  # e.g. ComfyUI: wait for its prompt to end

    @contextmanager
    def use(self) -> Iterator[RewardModel]:
        """Hold the model for one operation: one thread at a time (Qwen models keep per-forward state); inside
        `guard` when one is set (ComfyUI: no prompt runs meanwhile, for holds from other threads)."""
        with self.guard() if self.guard is not None else nullcontext(), self._lock:
            outermost = self._depth == 0  # hooks run once per outermost hold (a node holds it across chunks)
            if outermost and self.before_use is not None:
                self.before_use()
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if outermost and self.after_use is not None:
                    self.after_use()

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        dtype: str | torch.dtype | None = "auto",
        device: str | None = "auto",
        attn_implementation: str | None = None,
        device_map: str | dict | None = None,
        quantization: str | None = "none",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        max_frames: int = 32,
        fps: float = 2.0,
        trust_remote_code: bool = False,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
        **scoring: Any,
    ) -> RewardModel:
        """Load a checkpoint directory or hub id; remaining keywords are `ScoringConfig` fields.

        `quantization`: none, int8 or nf4 (bitsandbytes; the vision tower and the lm_head rows of the answer tokens
        keep `dtype`).
        `prefix_cache_bytes`: budget of the cross-call prefix cache (default 256 MiB; 0 disables it)."""
        options = VisualOptions(
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            video_max_pixels=video_max_pixels,
            max_frames=max_frames,
            fps=fps,
        )
        options.validate()
        check_budget(prefix_cache_bytes)
        vlm = load_vlm(
            model,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
            device_map=device_map,
            options=options,
            trust_remote_code=trust_remote_code,
            quantization=quantization,
            exact_token_ids=lambda tokenizer, path: reading_token_ids(tokenizer, path, scoring),
        )
        config = ScoringConfig().with_overrides(**trained_scoring(vlm.path)).with_overrides(**scoring)
        return cls(vlm, config, prefix_cache_bytes)

    def clear_prefix_cache(self) -> None:
        """Forget every cached prefix (call it after changing the model's weights in place)."""
        self.prefix_cache.clear()
        self.scorer.stats["prefix_cache_bytes"] = 0

    # --- settings -----------------------------------------------------------------------------------------
    def settings(self, overrides: dict[str, Any]) -> ScoringConfig:
        """This model's config with per-call overrides applied and validated."""
        return self.config.with_overrides(**overrides)

    # --- core -------------------------------------------------------------------------------------------------
    def batch_tokens(self, config: ScoringConfig) -> int:
        """Token budget of one forward under `config` (its own, else the device default)."""
        return config.max_batch_tokens or default_batch_tokens(self.vlm.device.type)

    def answer_tokens(self, config: ScoringConfig) -> AnswerTokens:
        """The yes/no token ids `config` reads (ValueError when its answer words clash in this tokenizer)."""
        return AnswerTokens.from_config(self.vlm.tokenizer, config, with_space=config.cot == "reasoning_first")

    def read_scores(
        self, logits: torch.Tensor, config: ScoringConfig, pairwise: Sequence[bool] | None = None
    ) -> torch.Tensor:
        """[0, 1] scores from answer-position logits [N, V]: P("yes"), or a text judge's reading (`pairwise` per row)."""
        judge = judge_named(config.judge)
        if judge.own_wording:
            return yes_probability(logits, self.answer_tokens(config), config.normalize)
        rows = [False] * logits.shape[0] if pairwise is None else list(pairwise)
        return judge_scores(logits, self.vlm.tokenizer, judge, rows)

    def probabilities(
        self, queries: list[Query], config: ScoringConfig, prepared: list[PreparedQuery] | None = None
    ) -> torch.Tensor:
        """The score of each query under `config` (read at the answer position; no generation)."""
        prepared = self.scorer.prepare(queries) if prepared is None else prepared
        logits = self.scorer.last_logits(
            prepared, self.batch_tokens(config), config.prefix_reuse, config.min_prefix_tokens
        )
        return self.read_scores(logits, config, [q.pairwise for q in queries])

    def generate(
        self,
        prepared: list[PreparedQuery],
        config: ScoringConfig,
        keys: list[int] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[list[str]]:
        """`config.samples` continuations of each prepared query, every query generated in one batched call."""
        return self.scorer.generate(prepared, **self._generation_options(config, keys, stop))

    def _generation_options(
        self, config: ScoringConfig, keys: list[int] | None, stop: Callable[[], bool] | None
    ) -> dict[str, Any]:
        """The keyword arguments of a generation call under `config`: budgets, sampling, prefix reuse, keys, stop."""
        return {
            "max_new_tokens": config.reason_tokens,
            "max_tokens": self.batch_tokens(config),
            "sampling": Sampling(config.temperature, config.top_p, config.seed, config.samples),
            "prefix_reuse": config.prefix_reuse,
            "min_prefix_tokens": config.min_prefix_tokens,
            "keys": keys,
            "stop": stop,
        }

    def run(
        self,
        queries: list[Query],
        config: ScoringConfig,
        reasons: bool = False,
        prepared: list[PreparedQuery] | None = None,
        keys: list[int] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Judgements:
        """Scores (and reasons, and with samples=k the spread) for queries, following the chain-of-thought mode.

        `prepared`: the queries already prepared (the server's batcher); `keys[i]` (default i) seeds query i's
        sampled judgements; `stop` is asked before every generation forward."""
        if config.cot == "reasoning_first":
            return self._reasoning_first(queries, config, prepared, keys, stop)
        prepared = self.scorer.prepare(queries) if prepared is None else prepared
        scores = self.probabilities(queries, config, prepared)
        if not reasons:
            return Judgements(scores)
        # a text judge explains itself from the start of its answer, not after the answer prefix
        if config.judge != "yes_no":
            prepared = self.scorer.prepare([replace(q, continuation="") for q in queries])
        texts = self.generate(prepared, config, keys, stop)
        return Judgements(scores, [t[0].strip() for t in texts])

    def _reasoning_first(
        self,
        queries: list[Query],
        config: ScoringConfig,
        prepared: list[PreparedQuery] | None,
        keys: list[int] | None,
        stop: Callable[[], bool] | None,
    ) -> Judgements:
        """Generate k reasonings per query, then read the verdict after each; the score is their mean P(yes).

        Each verdict is read from its generation's own KV cache (one more forward per decode batch); with gradients
        through the visuals, or with `verdicts_from_cache` off, the judged queries run again in full."""
        prepared = self.scorer.prepare(queries) if prepared is None else prepared
        if self.verdicts_from_cache and not self.scorer.needs_grad(prepared):
            texts, logits = self._verdicts_from_cache(queries, prepared, config, keys, stop)
        else:
            texts = self.generate(prepared, config, keys, stop)
            logits = self._verdicts_by_forward(queries, texts, config)
        pairwise = [q.pairwise for q in queries for _ in range(config.samples)]
        probs = self.read_scores(logits, config, pairwise).reshape(len(queries), config.samples)
        spread = probs.std(dim=1, unbiased=False) if config.samples > 1 else None
        return Judgements(probs.mean(dim=1), [ts[0] for ts in texts], spread)

    def _verdicts_from_cache(
        self,
        queries: list[Query],
        prepared: list[PreparedQuery],
        config: ScoringConfig,
        keys: list[int] | None,
        stop: Callable[[], bool] | None,
    ) -> tuple[list[list[str]], torch.Tensor]:
        """Each query's reasonings and their verdict logits [N * k, V], read from the generation's KV cache (a
        judgement the cache cannot serve, its ids leaving it before a visual's end, runs in full)."""

        def judge(i: int, text: str) -> PreparedQuery:
            known = {}
            if prepared[i].keys == [id(v) for v in queries[i].visuals]:  # prepared from these very visuals
                known = dict(zip(prepared[i].keys, prepared[i].visuals))
            return self.scorer.prepare([judged_query(queries[i], text)], known)[0]

        generated = self.scorer.generate_judged(prepared, judge, **self._generation_options(config, keys, stop))
        samples = [s for row in generated for s in row]
        missing = [r for r, s in enumerate(samples) if s.logits is None]
        logits = [s.logits for s in samples]
        if missing:
            full = self.scorer.last_logits(
                [samples[r].judged for r in missing],
                self.batch_tokens(config),
                config.prefix_reuse,
                config.min_prefix_tokens,
                stop,
            )
            for r, logit in zip(missing, full):
                logits[r] = logit
        k = config.samples
        return [[s.text for s in samples[i : i + k]] for i in range(0, len(samples), k)], torch.stack(logits)

    def _verdicts_by_forward(self, queries: list[Query], texts: list[list[str]], config: ScoringConfig) -> torch.Tensor:
        """Verdict logits [N * k, V] of every reasoning, each judged query run again in full (under gradients too)."""
        judged = self.scorer.prepare([judged_query(q, t) for q, ts in zip(queries, texts) for t in ts])
        if config.samples > 1 and not torch.is_grad_enabled():  # each prompt once, its cache over its k judgements
            return verdict_logits(self.scorer, judged, config.samples, self.batch_tokens(config))
        return self.scorer.last_logits(judged, self.batch_tokens(config), config.prefix_reuse, config.min_prefix_tokens)

    def check_gradients(self, images: Any) -> None:
        """Refuse gradients through a quantised judge (ReFL, noise-gradient search need ordinary weights)."""
        if self.differentiable or not torch.is_grad_enabled() or not _requires_grad(images):
            return
        raise ValueError(
            f"this judge is loaded with quantization {self.vlm.quantization!r}, which gives no reward gradients; "
            "load it with quantization 'none' for gradient methods (refl, noise_gradient), or use a method "
            "that only reads scores (raft, grpo, best_of_n)"
        )

    # --- public operations ----------------------------------------------------------------------------------
    def reward(
        self, images: Any, prompt: str | Sequence[str], few_shot: list[FewShotExample] | None = None, **overrides: Any
    ) -> torch.Tensor:
        """Pointwise P("yes") as a float32 tensor [N]; differentiable w.r.t. input tensors that require grad."""
        self.check_gradients(images)
        config = self.settings(overrides)
        queries = score_queries(images, prompt, config, few_shot)
        with self.use():
            return self.run(queries, config)[0]

    def compare_reward(
        self,
        candidates: Any,
        reference: Any,
        prompt: str | Sequence[str],
        few_shot: list[FewShotExample] | None = None,
        **overrides: Any,
    ) -> torch.Tensor:
        """Pairwise P(candidate beats `reference`) as a float32 tensor [N]; differentiable w.r.t. the candidates."""
        self.check_gradients(candidates)
        config = self.settings(overrides)
        queries = compare_queries(candidates, reference, prompt, config, few_shot)
        with self.use():
            return self.run(queries, config)[0]

    def score(
        self,
        images: Any,
        prompt: str | Sequence[str],
        few_shot: list[FewShotExample] | None = None,
        reasons: bool = False,
        **overrides: Any,
    ) -> ScoreResult:
        """Pointwise scores in input order (files, PIL, IMAGE tensors or `Video`s), optional reasons."""
        config = self.settings(overrides)
        queries = score_queries(images, prompt, config, few_shot)
        with self.use(), torch.no_grad():
            return score_result(self.run(queries, config, reasons))

    def compare(
        self,
        candidates: Any,
        reference: Any,
        prompt: str | Sequence[str],
        few_shot: list[FewShotExample] | None = None,
        reasons: bool = False,
        **overrides: Any,
    ) -> ScoreResult:
        """Pairwise: P(candidate beats `reference`) for each candidate (reference = image 1)."""
        config = self.settings(overrides)
        queries = compare_queries(candidates, reference, prompt, config, few_shot)
        with self.use(), torch.no_grad():
            return score_result(self.run(queries, config, reasons))

    def rank(
        self,
        images: Any,
        prompt: str | Sequence[str],
        top_k: int | None = None,
        few_shot: list[FewShotExample] | None = None,
        **overrides: Any,
    ) -> RankResult:
        """Pointwise ranking: the top-k indices (best first) and their scores."""
        visuals = to_visuals(images)
        top_k = check_top_k(top_k, len(visuals))
        return rank_result(self.score(visuals, prompt, few_shot=few_shot, **overrides).scores, top_k)

    def tournament(self, candidates: Any, prompt: str, **overrides: Any) -> TournamentResult:
        """Round robin: every candidate against every other as reference; rank by wins, then mean P."""
        config = self.settings(overrides)
        queries, pairs = tournament_queries(candidates, prompt, config)
        with self.use(), torch.no_grad():
            probs = self.run(queries, config)[0].tolist()
        return tournament_result(pairs, probs)


# --- the operations as queries in, results out (shared by RewardModel and the HTTP server) ---------------------
def score_queries(
    images: Any, prompt: str | Sequence[str], config: ScoringConfig, few_shot: list[FewShotExample] | None = None
) -> list[Query]:
    """Pointwise queries, one per image or video, in input order."""
    visuals = to_visuals(images)
    prompts = expand_prompts(prompt, len(visuals))
    few_shot = loaded_examples(few_shot)
    return [pointwise_query(v, p, config, few_shot) for v, p in zip(visuals, prompts)]


def compare_queries(
    candidates: Any,
    reference: Any,
    prompt: str | Sequence[str],
    config: ScoringConfig,
    few_shot: list[FewShotExample] | None = None,
) -> list[Query]:
    """Pairwise queries, one per candidate, each against the one `reference` (image 1)."""
    visuals = to_visuals(candidates, "candidates")
    ref = to_visuals(reference, "reference")
    if len(ref) != 1:
        raise ValueError(f"reference: pass exactly one reference image or video, got {len(ref)}")
    prompts = expand_prompts(prompt, len(visuals))
    few_shot = loaded_examples(few_shot)
    return [pairwise_query(ref[0], v, p, config, few_shot) for v, p in zip(visuals, prompts)]


def loaded_examples(few_shot: list[FewShotExample] | None) -> list[FewShotExample] | None:
    """Few-shot examples with their visuals loaded once, so all queries of a call share them (and one prefix)."""
    if not few_shot or not isinstance(few_shot, (list, tuple)):
        return few_shot  # prompts.py names what is wrong with anything else
    out = []
    for i, ex in enumerate(few_shot):
        if isinstance(ex, FewShotExample):
            visual = to_visual(ex.visual, f"few_shot[{i}].visual")
            reference = None if ex.reference is None else to_visual(ex.reference, f"few_shot[{i}].reference")
            ex = replace(ex, visual=visual, reference=reference)
        out.append(ex)
    return out


def tournament_queries(
    candidates: Any, prompt: str, config: ScoringConfig
) -> tuple[list[Query], list[tuple[int, int]]]:
    """Round-robin queries: (reference i, candidate j) for every ordered pair i != j."""
    visuals = to_visuals(candidates, "candidates")
    n = len(visuals)
    check_tournament_size(n, "candidates")
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: a tournament takes one prompt string, got {type(prompt).__name__}")
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    return [pairwise_query(visuals[i], visuals[j], prompt, config) for i, j in pairs], pairs


def score_result(judged: Judgements) -> ScoreResult:
    """A ScoreResult from the engine's judgements (spread only with samples > 1)."""
    spread = judged.spread.tolist() if judged.spread is not None else None
    return ScoreResult(judged.scores.tolist(), judged.reasons, spread)


def rank_result(scores: list[float], top_k: int, reasons: list[str] | None = None) -> RankResult:
    """Top-k indices by score (ties: lower index first) and their scores."""
    order = ranking_order(scores)[:top_k]
    return RankResult(order, [scores[i] for i in order], list(scores), reasons)


def tournament_result(pairs: list[tuple[int, int]], probs: list[float]) -> TournamentResult:
    """Wins (P > 0.5 as candidate), mean win probability and ranking from round-robin probabilities."""
    n = max(max(p) for p in pairs) + 1
    matrix = [[0.5] * n for _ in range(n)]
    for (i, j), p in zip(pairs, probs):
        matrix[i][j] = p
    wins = [sum(1 for i in range(n) if i != j and matrix[i][j] > 0.5) for j in range(n)]
    mean = [sum(matrix[i][j] for i in range(n) if i != j) / (n - 1) for j in range(n)]
    ranking = sorted(range(n), key=lambda j: (-wins[j], -mean[j], j))
    return TournamentResult(wins, mean, ranking, matrix)


def reading_token_ids(tokenizer: Any, path: Any, scoring: dict[str, Any]) -> set[int]:
    """Ids of every token a score may be read from: the yes/no words of the default settings (with variants, both
    space forms) and of this checkpoint's settings, and every judge preset's score and verdict tokens (a quantised
    judge keeps these lm_head rows exact)."""
    configs = [ScoringConfig(), ScoringConfig(answer_variants=True)]
    configs.append(ScoringConfig().with_overrides(**trained_scoring(path)).with_overrides(**scoring))
    ids: set[int] = set()
    for config in configs:
        for with_space in (False, True):
            tokens = AnswerTokens.from_config(tokenizer, config, with_space=with_space)
            ids.update(tokens.yes_ids + tokens.no_ids)
    for judge in JUDGES.values():
        for text in judge.score_tokens + judge.verdict_tokens:
            ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def judged_query(query: Query, reasoning: str) -> Query:
    """`query` continued by a generated reasoning (up to any verdict line of its own) and the verdict marker."""
    return replace(query, continuation=reasoning_before_verdict(reasoning) + "\n" + VERDICT_MARKER)


def reasoning_before_verdict(text: str) -> str:
    """The generated reasoning up to (not including) a verdict line the model may already have written."""
    lower = text.lower()
    cut = lower.find(VERDICT_MARKER.lower())
    return (text[:cut] if cut >= 0 else text).rstrip()


def _requires_grad(images: Any) -> bool:
    """True when `images` (a tensor or a list of them) carries autograd history."""
    if isinstance(images, torch.Tensor):
        return images.requires_grad
    if isinstance(images, (list, tuple)):
        return any(isinstance(x, torch.Tensor) and x.requires_grad for x in images)
    return False


def expand_prompts(prompt: str | Sequence[str], n: int) -> list[str]:
    """One prompt per item: a single string is shared; a list must have one prompt per item."""
    if isinstance(prompt, str):
        return [prompt] * n
    if isinstance(prompt, Sequence) and all(isinstance(p, str) for p in prompt):
        if len(prompt) != n:
            raise ValueError(f"prompt: got {len(prompt)} prompts for {n} images; pass one prompt or one per image")
        return list(prompt)
    raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")


__all__ = ["RewardModel", "score_queries", "compare_queries", "tournament_queries", "rank_result", "tournament_result"]
