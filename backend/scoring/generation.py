"""Batched text generation for chain of thought: every query of a call decodes together.

Reasoning-first judgements and `reasons=True` explanations are generated here, all queries of a call at once:
left-padded token-budget batches (`Scorer.token_batches`) for the prefill, queries that share a prefix start from
its KV cache (`Scorer.prefix_groups` / `Scorer._prefix_cache`), consecutive prefill batches then decode as one batch
(their caches widened to one layout and joined, up to DECODE_CACHE_BUDGETS token budgets of cache: `decode_groups`),
each row stops at an end-of-sequence token or the budget, and `samples` continuations per query are drawn from one
prefill (its cache repeated). Decoding many rows together is what makes batched generation pay on a CPU: a decode
step's matmuls (the output layer over the vocabulary above all) cost as much per row on 1-3 rows as on one.

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

Reasoning-first verdicts (`generate_judged` with a `judge`) are read from the decode batch's own KV cache before it is
freed: it already holds each row's prompt and the generated tokens that were fed, and the judged query (prompt,
reasoning, "\nFinal answer:") shares a long prefix with them. One more forward per decode batch runs only each row's
remaining judged tokens (left-padded), each row seeing the cache columns of its own common prefix and nothing after
it, and keeps the last position's logits: no second pass over prompt and visuals. A row whose common prefix ends
before a visual's last token (a retokenised prompt) is left to the caller, who runs its judged query in full.

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
DECODE_CACHE_BUDGETS = 8  # prefill batches decode together while their KV cache holds at most this many token budgets


Judge = Callable[[int, str], "PreparedQuery"]  # (query index, generated text) -> the judged query to read


@dataclass
class Sample:
    """One generated continuation; with a judge, its judged query and verdict logits [V] (float32) read from the
    decode cache (`logits` None: the judged ids leave the cache before a visual's end, run that query in full)."""

    text: str
    judged: PreparedQuery | None = None
    logits: torch.Tensor | None = None


def generate_batch(
    scorer: Scorer,
    prepared: list[PreparedQuery],
    max_new_tokens: int,
    max_tokens: int,
    sampling: Sampling = GREEDY,
    **options: Any,
) -> list[list[str]]:
    """`sampling.samples` continuations of every prepared query (texts[i][j]), decoded without special tokens.

    `options`: prefix_reuse, min_prefix_tokens, keys, stop (see `generate_judged`)."""
    samples = generate_judged(scorer, prepared, max_new_tokens, max_tokens, sampling, **options)
    return [[s.text for s in row] for row in samples]


def generate_judged(
    scorer: Scorer,
    prepared: list[PreparedQuery],
    max_new_tokens: int,
    max_tokens: int,
    sampling: Sampling = GREEDY,
    prefix_reuse: bool = True,
    min_prefix_tokens: int = 64,
    keys: list[int] | None = None,
    stop: Callable[[], bool] | None = None,
    judge: Judge | None = None,
) -> list[list[Sample]]:
    """`sampling.samples` continuations of every prepared query (samples[i][j]); with `judge`, each one's verdict.

    `keys[i]` (default i) seeds query i's samples with `sampling.seed`; `stop` is asked before every forward
    (True ends the call with `ScoringStopped`); `judge(i, text)` gives the judged query of a continuation of query i,
    whose last-position logits are read from the decode batch's KV cache (one more forward per decode batch)."""
    keys = list(range(len(prepared))) if keys is None else keys
    k = sampling.samples
    out: list[list[Sample] | None] = [None] * len(prepared)
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
            batches = list(scorer.token_batches(lengths, max(1, (max_tokens - start) // k)))
            for group in decode_groups(batches, lengths, k, DECODE_CACHE_BUDGETS * max_tokens):
                chunks = [[prepared[members[j]] for j in batch] for batch in group]
                rows = [members[j] for batch in group for j in batch]
                local = None if judge is None else _local_judge(judge, rows)
                samples = _decode_batch(
                    scorer, chunks, start, cache, max_new_tokens, sampling, [keys[i] for i in rows], stop, local
                )
                for i, s in zip(rows, samples):
                    out[i] = s
    return out  # type: ignore[return-value]


def decode_groups(
    batches: list[list[int]], lengths: list[int], samples: int, cache_tokens: int
) -> list[list[list[int]]]:
    """Consecutive prefill batches decoded together: as many as keep the group's KV cache (rows x samples x the
    widest row's tokens, prompt and continuation) within `cache_tokens`, at least one batch a group.

    Each batch's prefill is bounded by the token budget; decoding them together makes the per-step matmuls (the
    output layer above all) run on many rows, where CPU BLAS costs as much per row for 1-3 rows as for one."""
    groups: list[list[list[int]]] = []
    widest = 0
    for batch in batches:
        wider = max(widest, *(lengths[j] for j in batch))
        rows = sum(len(b) for b in groups[-1]) + len(batch) if groups else 0
        if groups and rows * samples * wider <= cache_tokens:
            groups[-1].append(batch)
            widest = wider
        else:
            groups.append([batch])
            widest = max(lengths[j] for j in batch)
    return groups


def _local_judge(judge: Judge, rows: list[int]) -> Judge:
    """`judge` over a batch's own row numbers (row b of the batch is query rows[b] of the call)."""
    return lambda b, text: judge(rows[b], text)


def _check(stop: Callable[[], bool] | None) -> None:
    from .scorer import ScoringStopped

    if stop is not None and stop():
        raise ScoringStopped("generation was stopped between forwards")


def _decode_batch(
    scorer: Scorer,
    chunks: list[list[PreparedQuery]],
    start: int,
    prefix: Any,
    max_new_tokens: int,
    sampling: Sampling,
    keys: list[int],
    stop: Callable[[], bool] | None,
    judge: Judge | None = None,
) -> list[list[Sample]]:
    """Prefill each chunk (after an optional prefix cache), decode all their rows together to EOS or the budget,
    then read each row's verdict from the cache when a `judge` (over the rows' numbers here) is given."""
    prefilled = []
    for chunk in chunks:
        _check(stop)
        prefilled.append(scorer._forward(chunk, start, prefix, return_cache=True))
    rows = [r for chunk in chunks for r in chunk]
    cache = merged_caches([c for _, c in prefilled], [_width(chunk, start) for chunk in chunks], start)
    if cache is None:  # a cache this code cannot widen: each chunk decodes on its own
        out, offset = [], 0
        for chunk in chunks:
            sub = None if judge is None else _local_judge(judge, list(range(offset, offset + len(chunk))))
            own = keys[offset : offset + len(chunk)]
            out += _decode_batch(scorer, [chunk], start, prefix, max_new_tokens, sampling, own, stop, sub)
            offset += len(chunk)
        return out
    logits = torch.cat([logit for logit, _ in prefilled])
    return _decode_rows(scorer, rows, start, logits, cache, max_new_tokens, sampling, keys, stop, judge)


def _width(rows: list[PreparedQuery], start: int) -> int:
    """The left-padded width of a batch's tokens after the shared prefix."""
    return max(len(r) - start for r in rows)


def merged_caches(caches: list[Any], widths: list[int], start: int) -> Any:
    """The KV caches of several prefill batches as one batch: each batch's padding (after the `start` shared
    columns) widened to the widest batch's, as `_prefill_mask` lays the rows out; None when a cache layer is not
    a plain dynamic layer of keys and values."""
    if len(caches) == 1:
        return caches[0]
    layers = [getattr(c, "layers", None) for c in caches]
    if any(ls is None or any(type(layer).__name__ != "DynamicLayer" for layer in ls) for ls in layers):
        return None
    width = max(widths)
    for i, layer in enumerate(layers[0]):
        for name in ("keys", "values"):
            parts = [_widened(getattr(ls[i], name), start, width - w) for ls, w in zip(layers, widths)]
            setattr(layer, name, torch.cat(parts))
    return caches[0]


def _widened(states: torch.Tensor, start: int, extra: int) -> torch.Tensor:
    """Cached states [B, H, L, D] with `extra` zero columns inserted after the first `start` (masked padding)."""
    if extra == 0:
        return states
    pad = states.new_zeros((*states.shape[:2], extra, states.shape[3]))
    return torch.cat([states[:, :, :start], pad, states[:, :, start:]], dim=2)


def _decode_rows(
    scorer: Scorer,
    rows: list[PreparedQuery],
    start: int,
    logits: torch.Tensor,
    cache: Any,
    max_new_tokens: int,
    sampling: Sampling,
    keys: list[int],
    stop: Callable[[], bool] | None,
    judge: Judge | None,
) -> list[list[Sample]]:
    """Decode prefilled rows (their last logits and KV cache) to EOS or the budget; verdicts as `_decode_batch`."""
    model = scorer.vlm.model
    k = sampling.samples
    scorer.stats["decode_batches"] += 1
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
    fed = 0  # decode forwards: tokens of every row now in the cache after its prompt
    pad_id = scorer.pad_id
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
        fed += 1
        positions = positions + 1
        logits = out.logits[:, -1].float()
    scorer.stats["generated_tokens"] += sum(len(g) for g in generated)
    texts = [scorer.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    if judge is None:
        samples = [Sample(t) for t in texts]
    else:
        judged = [judge(r // k, t) for r, t in enumerate(texts)]
        prompts = [rows[r // k] for r in range(n)]
        cached = [r.input_ids.tolist() + g[:fed] for r, g in zip(prompts, generated)]  # a row's final token is not fed
        _check(stop)
        verdicts = _cached_verdicts(scorer, cache, mask, [len(p) for p in prompts], start, cached, judged)
        samples = [Sample(t, j, v) for t, j, v in zip(texts, judged, verdicts)]
    return [samples[i * k : (i + 1) * k] for i in range(len(rows))]


def _cached_verdicts(
    scorer: Scorer,
    cache: Any,
    mask: torch.Tensor,
    lengths: list[int],
    start: int,
    cached: list[list[int]],
    judged: list[PreparedQuery],
) -> list[torch.Tensor | None]:
    """Last-position logits [V] of each row's judged query, from one more forward over the decode cache.

    Row r's cache holds its prompt of `lengths[r]` tokens (the shared `start` columns, then its left-padded suffix,
    as `_prefill_mask` lays them out), then one column per decode step: `cached[r]` are the ids of those columns
    (pad ids fed after the row was done follow them). The judged query runs on from its longest common prefix with
    them, seeing only that prefix's columns; None for a row whose common prefix ends before a visual's last token."""
    cuts = [_reusable_prefix(j, c, start) for j, c in zip(judged, cached)]
    if all(cut is None for cut in cuts):
        return [None] * len(judged)
    visible = mask.clone()
    pad_to = max(lengths) - start  # width of the prefill's left-padded suffixes
    for r, cut in enumerate(cuts):
        if cut is not None:  # its own columns from the cut on, and the pads fed after it was done
            visible[r, cut + start + pad_to - lengths[r] :] = 0
    tails = [j.input_ids[:0] if cut is None else j.input_ids[cut:] for j, cut in zip(judged, cuts)]
    places = [j.positions[..., :0] if cut is None else j.positions[..., cut:] for j, cut in zip(judged, cuts)]
    from .scorer import left_padded

    ids, own, positions = left_padded(tails, places, scorer.pad_id, mask.device)
    model = scorer.vlm.model
    out = model(
        input_ids=ids,
        attention_mask=torch.cat([visible, own], dim=1),
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_keyword(model): cache},
    )
    scorer.stats["verdict_forwards"] += 1
    logits = out.logits[:, -1].float()
    return [None if cut is None else logits[r] for r, cut in enumerate(cuts)]


def _reusable_prefix(judged: PreparedQuery, cached: list[int], start: int) -> int | None:
    """How many leading ids of `judged` the cached ids share (it keeps one of its own), or None when that
    prefix does not reach past the shared prefix and every visual (then the cache cannot serve it)."""
    n = min(len(judged) - 1, len(cached))
    differs = (judged.input_ids[:n].cpu() != torch.tensor(cached[:n], dtype=torch.long)).nonzero()
    cut = int(differs[0]) if len(differs) else n
    return cut if cut >= max([start, *(e for _, e in judged.spans)]) else None


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
    """Last-position logits [N * samples, V] of each query's `samples` judged continuations (rows i*k .. i*k+k-1),
    each run again in full (the reasoning-first path when the decode cache is not read: `verdicts_from_cache` off).

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
