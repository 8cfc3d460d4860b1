"""Batched text generation for chain of thought: every query of a call decodes together.

Reasoning-first judgements and `reasons=True` explanations are generated here, all queries of a call at once:
left-padded token-budget batches (`Scorer.token_batches`), queries that share a prefix start from its KV cache
(`Scorer.prefix_groups` / `Scorer._prefix_cache`), each row stops at an end-of-sequence token or the budget, and
`samples` continuations per query are drawn from one prefill (its cache repeated).

Why a small loop of our own over the model's forward rather than transformers' `generate`:
- positions: the scorer computes each sequence's position ids itself (`family.position_ids`; multimodal RoPE for
  Qwen2-VL / 2.5-VL / 3-VL), so a score never depends on its batch. `generate` recomputes them for the whole batch
  from its own `rope_deltas` state and takes no per-row positions; here decoding continues each row's own positions
  (the next token sits one past the row's last position on every axis).
- prefix caches: `generate` cannot start from a shared prefix cache repeated over rows that are then left-padded
  *after* the prefix (the scorer's layout: prefix, padding, suffix).
- sampling: each (query, sample) row draws from its own seeded generator, so the texts of a query depend on the
  seed and its key only, never on which other queries share its batch (or a server batch).
The prefill goes through the scorer's own `_forward` / `_prefix_cache`, so it feeds visuals exactly as scoring does.

Greedy output equals transformers' one-query `generate(do_sample=False)` token for token. Of the checkpoint's
generation config, `eos_token_id` (one id or a list) and `repetition_penalty` are honoured, as `generate` applies
them; its sampling defaults (temperature, top_k, top_p) are not: `Sampling` says how to sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..vlm.base import cache_keyword

if TYPE_CHECKING:
    from .scorer import PreparedQuery, Scorer


@dataclass(frozen=True)
class Sampling:
    """How continuations are chosen: greedy at temperature 0, else sampled (top-p), `samples` per query."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    samples: int = 1

    @property
    def greedy(self) -> bool:
        """True when every step takes the most likely token."""
        return self.temperature == 0


GREEDY = Sampling()


def generate_batch(
    scorer: Scorer,
    prepared: list[PreparedQuery],
    max_new_tokens: int,
    max_tokens: int,
    sampling: Sampling = GREEDY,
    prefix_reuse: bool = True,
    min_prefix_tokens: int = 64,
    keys: list[int] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[list[str]]:
    """`sampling.samples` continuations of every prepared query (texts[i][j]), decoded without special tokens.

    `keys[i]` (default i) seeds query i's samples with `sampling.seed`; `stop` is asked before every forward
    (True ends the call with `ScoringStopped`)."""
    keys = list(range(len(prepared))) if keys is None else keys
    k = sampling.samples
    out: list[list[str] | None] = [None] * len(prepared)
    with torch.no_grad():
        if prefix_reuse:
            groups, rest = scorer.prefix_groups(prepared, min_prefix_tokens)
        else:
            groups, rest = [], list(range(len(prepared)))
        plans = [(0, rest)] + groups
        for start, members in plans:
            if not members:
                continue
            _check(stop)
            cache = scorer._prefix_cache(prepared[members[0]], start) if start else None
            lengths = [len(prepared[i]) - start + max_new_tokens for i in members]
            for batch in scorer.token_batches(lengths, max(1, (max_tokens - start) // k)):
                rows = [members[j] for j in batch]
                texts = _decode_batch(
                    scorer,
                    [prepared[i] for i in rows],
                    start,
                    cache,
                    max_new_tokens,
                    sampling,
                    [keys[i] for i in rows],
                    stop,
                )
                for i, t in zip(rows, texts):
                    out[i] = t
    return out  # type: ignore[return-value]


def _check(stop: Callable[[], bool] | None) -> None:
    from .scorer import ScoringStopped

    if stop is not None and stop():
        raise ScoringStopped("generation was stopped between forwards")


def _decode_batch(
    scorer: Scorer,
    rows: list[PreparedQuery],
    start: int,
    prefix: Any,
    max_new_tokens: int,
    sampling: Sampling,
    keys: list[int],
    stop: Callable[[], bool] | None,
) -> list[list[str]]:
    """Prefill one batch (after an optional prefix cache), then decode every row to EOS or the budget."""
    _check(stop)
    model = scorer.vlm.model
    k = sampling.samples
    logits, cache = scorer._forward(rows, start, prefix, return_cache=True)
    mask = _prefill_mask(rows, start, logits.device)
    positions = torch.stack([r.positions[..., -1] for r in rows], dim=-1) + 1  # [B] or [3, B]
    history = [r.input_ids.tolist() for r in rows]
    if k > 1:
        logits = logits.repeat_interleave(k, dim=0)
        cache.batch_repeat_interleave(k)
        mask = mask.repeat_interleave(k, dim=0)
        positions = positions.repeat_interleave(k, dim=-1)
        history = [h for h in history for _ in range(k)]
    chooser = TokenChooser(scorer, sampling, [key for key in keys for _ in range(k)], history)
    eos = eos_ids(model)
    n = logits.shape[0]
    generated: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    pad_id = scorer.tokenizer.pad_token_id if scorer.tokenizer.pad_token_id is not None else 0
    for step in range(max_new_tokens):
        tokens = chooser.choose(logits)
        for r, t in enumerate(tokens):
            if done[r]:
                tokens[r] = pad_id
                continue
            generated[r].append(t)
            done[r] = t in eos
        if all(done) or step == max_new_tokens - 1:
            break
        _check(stop)
        ids = torch.tensor(tokens, dtype=torch.long, device=mask.device)[:, None]
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions[..., None],
            use_cache=True,
            logits_to_keep=1,
            **{cache_keyword(model): cache},
        )
        scorer.stats["decode_forwards"] += 1
        positions = positions + 1
        logits = out.logits[:, -1].float()
    scorer.stats["generated_tokens"] += sum(len(g) for g in generated)
    texts = [scorer.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    return [texts[i * k : (i + 1) * k] for i in range(len(rows))]


def _prefill_mask(rows: list[PreparedQuery], start: int, device: torch.device) -> torch.Tensor:
    """The attention mask `Scorer._forward` used: the prefix, then each row's suffix left-padded to one width."""
    width = max(len(r) - start for r in rows)
    mask = torch.zeros((len(rows), start + width), dtype=torch.long, device=device)
    mask[:, :start] = 1
    for b, r in enumerate(rows):
        mask[b, start + width - (len(r) - start) :] = 1
    return mask


def eos_ids(model: Any) -> set[int]:
    """The token ids that end a continuation: the checkpoint's generation config `eos_token_id` (one or a list)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


class TokenChooser:
    """Picks each row's next token: repetition penalty (the checkpoint's), then argmax or a seeded top-p draw."""

    def __init__(self, scorer: Scorer, sampling: Sampling, keys: list[int], history: list[list[int]]):
        self.sampling = sampling
        penalty = getattr(getattr(scorer.vlm.model, "generation_config", None), "repetition_penalty", None)
        self.penalty = float(penalty) if penalty not in (None, 1.0) else None
        self.history = history  # each row's prompt and generated ids (the repetition penalty reads them)
        self.generators = None
        if not sampling.greedy:
            self.generators = [
                torch.Generator().manual_seed(row_seed(sampling.seed, key, j % sampling.samples))
                for j, key in enumerate(keys)
            ]

    def choose(self, logits: torch.Tensor) -> list[int]:
        """Next token of every row from float32 logits [R, V]; appends them to the rows' histories."""
        if self.penalty is not None:
            logits = self._penalise(logits)
        if self.generators is None:
            tokens = logits.argmax(dim=-1).tolist()
        else:
            probs = top_p_probabilities(logits / self.sampling.temperature, self.sampling.top_p).cpu()
            tokens = [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, self.generators)]
        for h, t in zip(self.history, tokens):
            h.append(t)
        return tokens

    def _penalise(self, logits: torch.Tensor) -> torch.Tensor:
        """transformers' repetition penalty: seen tokens' logits divided (positive) or multiplied (negative)."""
        seen = torch.zeros_like(logits, dtype=torch.bool)
        for r, h in enumerate(self.history):
            seen[r, torch.tensor(h, dtype=torch.long, device=logits.device)] = True
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen, penalised, logits)


def top_p_probabilities(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Softmax over the smallest set of tokens whose probability reaches `top_p` (the most likely always kept)."""
    probs = torch.softmax(logits, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def row_seed(seed: int, key: int, sample: int) -> int:
    """The generator seed of one (query key, sample index) row under `seed` (stable across runs and machines)."""
    digest = hashlib.blake2b(f"{seed}:{key}:{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def verdict_logits(scorer: Scorer, judged: list[PreparedQuery], samples: int, max_tokens: int) -> torch.Tensor:
    """Last-position logits [N * samples, V] of each query's `samples` judged continuations (rows i*k .. i*k+k-1).

    The tokens a query's k rows share (its prompt with every visual) run once; its KV cache is repeated over the
    k continuations, so k judgements cost one prompt plus k reasonings rather than k prompts."""
    out = []
    for i in range(0, len(judged), samples):
        rows = judged[i : i + samples]
        cut = _shared_length(rows)
        if cut <= max((e for r in rows for _, e in r.spans), default=0):  # a visual after the cut: no sharing
            out.append(scorer.last_logits(rows, max_tokens, prefix_reuse=False))
            continue
        cache = scorer._prefix_cache(rows[0], cut)
        logits: list[torch.Tensor | None] = [None] * len(rows)
        for batch in scorer.suffix_batches([len(r) - cut for r in rows], cut, max_tokens):
            for j, logit in zip(batch, scorer._forward([rows[j] for j in batch], cut, cache)):
                logits[j] = logit
        out.append(torch.stack(logits))  # type: ignore[arg-type]
    return torch.cat(out)


def _shared_length(rows: list[PreparedQuery]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    first = rows[0].input_ids[:shortest]
    same = torch.ones(shortest, dtype=torch.bool, device=first.device)
    for r in rows[1:]:
        same &= r.input_ids[:shortest] == first
    differs = (~same).nonzero()
    shared = int(differs[0]) if len(differs) else shortest
    return min(shared, shortest - 1)
