"""The batched scorer: queries -> token ids and pixels -> one forward per batch -> last-position logits.

- Each distinct visual is preprocessed once per call (tensor images of one size in one batched op).
- Batches are formed by a token budget (batch size x padded length; after a shared prefix, of the suffixes, with
  the rows' copies of the prefix's KV cache bounded too), left-padded, and only the last position's logits are
  computed (`logits_to_keep=1`).
- Position ids are computed per sequence with the model's own rules, so a score never depends on which
  other queries share its batch.
- Vision features once per distinct visual: the vision tower runs once per visual in a call (batched, within
  the token budget), and every forward gets those features at the visual's tokens instead of pixels, so a
  tournament or a pairwise set never re-encodes a candidate or a reference (`reuse_features`).
- Shared-prefix reuse: queries that begin with the same tokens and the same visuals (instruction,
  reference image, few-shot examples) run that prefix once; its KV cache is repeated for the suffixes.
  A `PrefixCache` (prefix_cache.py) keeps those KV caches across calls; never with gradients.
- CUDA out-of-memory splits the batch in half and retries, down to one query.
- Chain of thought generates for every query of a call together (generation.py), from the same forward paths;
  reasoning-first verdicts are read from each decode batch's own KV cache (`generate_judged`).
"""

from __future__ import annotations

import copy
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..media import Image, Video, Visual
from ..vlm.base import EncodedVisual, VisualFeatures, cache_keyword, output_cache
from ..vlm.loading import LoadedVLM
from .config import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS
from .generation import GREEDY, Judge, Sample, Sampling, generate_batch, generate_judged
from .prefix_cache import PrefixCache, prefix_key
from .prompts import Query

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# A suffix batch after a shared prefix repeats the prefix's KV cache once per row; those copies may hold up to this
# many times the forward's token budget (the suffix tokens themselves are what the budget counts).
PREFIX_COPIES = 8


def left_padded(
    ids: list[torch.Tensor], positions: list[torch.Tensor], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of token ids [L] and their positions ([L] or [3, L]) left-padded to one width: ids [B, W], attention
    mask [B, W] and positions [B, W] or [3, B, W] (padding positions are 1, masked out)."""
    width = max(len(row) for row in ids)
    out = torch.full((len(ids), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(ids), width), dtype=torch.long, device=device)
    places = torch.ones((*positions[0].shape[:-1], len(ids), width), dtype=torch.long, device=device)
    for b, (row, pos) in enumerate(zip(ids, positions)):
        out[b, width - len(row) :] = row
        mask[b, width - len(row) :] = 1
        places[..., b, width - len(row) :] = pos
    return out, mask, places


class ScoringStopped(Exception):
    """A scoring call ended between forwards because its `stop` callback asked it to."""


@dataclass(eq=False)
class PreparedQuery:
    """A query as model inputs: ids, per-sequence positions, encoded visuals and where they sit."""

    input_ids: torch.Tensor  # [L]
    positions: torch.Tensor  # [L] or [3, L]
    visuals: list[EncodedVisual]
    spans: list[tuple[int, int]]  # token span of each visual
    keys: list[int]  # identity of each visual's source object
    pairwise: bool = False  # from the query: which answer tokens a text-answering judge reads

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def visuals_from(self, start: int) -> list[EncodedVisual]:
        """Visuals whose tokens lie at or after `start`."""
        return [v for v, (s, _) in zip(self.visuals, self.spans) if s >= start]


class FeatureStore:
    """Vision features of one call: each visual encoded once, kept while a later forward still needs it."""

    def __init__(self, scorer: Scorer, max_tokens: int, uses: Counter[int] | None = None):
        self.scorer = scorer
        self.max_tokens = max_tokens  # vision tokens per tower call
        self.uses = uses if uses is not None else Counter()  # id(EncodedVisual) -> forwards still to read it
        self.kept: dict[int, VisualFeatures] = {}

    def get(self, visuals: list[EncodedVisual]) -> list[VisualFeatures] | None:
        """Features of `visuals` in order (missing ones through the tower, batched within `max_tokens`);
        None when the family passes pixels instead."""
        found: dict[int, VisualFeatures] = {}
        missing = [v for v in {id(v): v for v in visuals}.values() if id(v) not in self.kept]
        for chunk in self._chunks(missing, self.max_tokens):
            features = self.scorer.family.visual_features(self.scorer.vlm.model, chunk, self.scorer.vlm.dtype)
            if features is None:
                return None
            self.scorer.stats["vision_encodes"] += len(chunk)
            for v, f in zip(chunk, features):
                found[id(v)] = f
                if self.uses[id(v)] > 1:  # a later forward needs it too
                    self.kept[id(v)] = f
        return [self.kept[id(v)] if id(v) in self.kept else found[id(v)] for v in visuals]

    def release(self, visuals: list[EncodedVisual]) -> None:
        """One forward over `visuals` is done (or not needed): drop features no later forward reads."""
        for v in visuals:
            self.uses[id(v)] -= 1
            if self.uses[id(v)] <= 0:
                self.kept.pop(id(v), None)

    @staticmethod
    def _chunks(visuals: list[EncodedVisual], max_tokens: int) -> Iterator[list[EncodedVisual]]:
        """Consecutive runs of visuals whose vision tokens fit `max_tokens` (at least one visual each)."""
        chunk: list[EncodedVisual] = []
        total = 0
        for v in visuals:
            if chunk and total + v.num_tokens > max_tokens:
                yield chunk
                chunk, total = [], 0
            chunk.append(v)
            total += v.num_tokens
        if chunk:
            yield chunk


class Scorer:
    """Runs prepared queries through a loaded VLM and returns last-position logits."""

    def __init__(self, vlm: LoadedVLM, prefix_cache: PrefixCache | None = None):
        self.vlm = vlm
        self.family = vlm.family
        self.tokenizer = vlm.tokenizer
        self.prefix_cache = prefix_cache  # shared prefixes' KV caches across calls (None or 0 bytes: off)
        self.reuse_features = True  # False: every forward passes pixels and runs the vision tower itself
        kinds = self.family.placeholder_kinds
        pattern = "|".join(re.escape(p) for p in sorted(kinds, key=len, reverse=True))  # longest form first
        self._placeholder_re = re.compile(f"({pattern})")
        # forwards, prefix_forwards, oom_splits, tokens, vision_encodes (visuals through the tower),
        # prefix_cache_hits / _misses / _evictions and prefix_cache_bytes (the cross-call cache's size now);
        # generation: decode_forwards, generated_tokens, verdict_forwards (reasoning-first verdicts off the cache)
        self.stats = Counter()

    @property
    def pad_id(self) -> int:
        """The id left padding uses: the tokenizer's pad token, else 0 (masked out either way)."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # --- preparation ----------------------------------------------------------------------------------
    def encode_visuals(self, visuals: list[Visual]) -> dict[int, EncodedVisual]:
        """Preprocess each distinct visual once; images of one size are resized in one batched op."""
        device = self.vlm.device
        distinct = list({id(v): v for v in visuals}.values())
        images = [v for v in distinct if isinstance(v, Image)]
        encoded: dict[int, EncodedVisual] = {}
        if images:
            for img, enc in zip(images, self.family.encode_images(images, device)):
                encoded[id(img)] = enc
        for v in distinct:
            if isinstance(v, Video):
                encoded[id(v)] = self.family.encode_video(v, device)
        return encoded

    def render(self, query: Query) -> str:
        """The query's full prompt text from the checkpoint's chat template, plus any continuation."""
        text = self.tokenizer.apply_chat_template(
            query.messages, chat_template=self.vlm.chat_template, tokenize=False, add_generation_prompt=True
        )
        return text + query.continuation

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def continuation_tokens(self, query: Query) -> int:
        """How many tokens `query.continuation` adds at the end of the prepared query."""
        tail = self._placeholder_re.split(self.render(query))[-1]  # the text after the last visual
        cut = len(tail) - len(query.continuation)
        return len(self.tokenize(tail)) - len(self.tokenize(tail[:cut]))

    def prepare(self, queries: list[Query], encoded: dict[int, EncodedVisual] | None = None) -> list[PreparedQuery]:
        """Render, expand visual placeholders and tokenize every query (visuals in `encoded`, by id of the source
        object, are not preprocessed again)."""
        encoded = dict(encoded or {})
        encoded.update(self.encode_visuals([v for q in queries for v in q.visuals if id(v) not in encoded]))
        return [self._prepare_one(q, encoded) for q in queries]

    def _prepare_one(self, query: Query, encoded: dict[int, EncodedVisual]) -> PreparedQuery:
        parts = self._placeholder_re.split(self.render(query))
        placeholders = parts[1::2]
        if len(placeholders) != len(query.visuals):
            raise ValueError(
                f"the chat template rendered {len(placeholders)} visual placeholder(s) for {len(query.visuals)} "
                "visual(s); the checkpoint's chat template must render {'type': 'image'/'video'} content parts"
            )
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        visuals: list[EncodedVisual] = []
        for i, text in enumerate(parts[0::2]):
            ids.extend(self.tokenize(text))
            if i < len(query.visuals):
                visual = encoded[id(query.visuals[i])]
                if self.family.placeholder_kinds[placeholders[i]] != visual.kind:
                    raise ValueError(f"visual {i} is a {visual.kind} but the prompt has a {placeholders[i]!r} there")
                start = len(ids)
                for piece in visual.pieces:
                    ids.extend(self.tokenize(piece) if isinstance(piece, str) else piece)
                spans.append((start, len(ids)))
                visuals.append(visual)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.vlm.device)
        positions = self.family.position_ids(self.vlm.model, input_ids, visuals)
        return PreparedQuery(input_ids, positions, visuals, spans, [id(v) for v in query.visuals], query.pairwise)

    # --- batching -------------------------------------------------------------------------------------
    @staticmethod
    def token_batches(lengths: list[int], max_tokens: int) -> Iterator[list[int]]:
        """Index batches, longest first, each within `max_tokens` of padded length x batch size."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batch: list[int] = []
        for i in order:
            longest = lengths[batch[0]] if batch else lengths[i]
            if batch and (len(batch) + 1) * longest > max_tokens:
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    @classmethod
    def suffix_batches(cls, lengths: list[int], prefix_len: int, max_tokens: int) -> Iterator[list[int]]:
        """Index batches of suffixes after a shared prefix: each within `max_tokens` of new tokens, and holding at
        most PREFIX_COPIES x `max_tokens` tokens of repeated prefix KV cache (its rows' copies of the prefix)."""
        rows_by_cache = max(1, PREFIX_COPIES * max_tokens // max(1, prefix_len))
        for batch in cls.token_batches(lengths, max_tokens):
            for i in range(0, len(batch), rows_by_cache):
                yield batch[i : i + rows_by_cache]

    def prefix_groups(
        self, prepared: list[PreparedQuery], min_tokens: int, singles: bool = False
    ) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """Split queries into (prefix length, members) groups that share a prefix, and the rest.

        The prefix of a query is everything before its last visual (the candidate in every prompt layout:
        after the reference in pairwise and tournament queries, after the examples in few-shot ones).
        Queries group only when those tokens and the source objects of the visuals in them are identical.
        `singles`: a query alone with its prefix forms a group too (a cross-call cache can reuse that prefix).
        """
        by_key: dict[tuple, list[int]] = defaultdict(list)
        rest: list[int] = []
        for i, p in enumerate(prepared):
            if not p.spans:
                rest.append(i)
                continue
            cut = p.spans[-1][0]
            shared_keys = tuple(k for k, (s, _) in zip(p.keys, p.spans) if s < cut)
            by_key[(tuple(p.input_ids[:cut].tolist()), shared_keys)].append(i)
        groups = []
        for (prefix, _), members in by_key.items():
            if (len(members) >= 2 or singles) and len(prefix) >= min_tokens:
                groups.append((len(prefix), members))
            else:
                rest.extend(members)
        return groups, sorted(rest)

    # --- forward passes -------------------------------------------------------------------------------
    def last_logits(
        self,
        prepared: list[PreparedQuery],
        max_tokens: int,
        prefix_reuse: bool = True,
        min_prefix_tokens: int = 64,
        stop: Callable[[], bool] | None = None,
    ) -> torch.Tensor:
        """Last-position logits [N, V] (float32) for prepared queries, in input order.

        `stop` is asked before every forward; when it answers True the call ends with `ScoringStopped` (a server
        abandons a batch whose clients are gone, or when it shuts down)."""

        def check() -> None:
            if stop is not None and stop():
                raise ScoringStopped("scoring was stopped between forwards")

        out: list[torch.Tensor | None] = [None] * len(prepared)
        grad = self.needs_grad(prepared)
        with torch.set_grad_enabled(grad):
            if prefix_reuse and not grad:
                groups, rest = self.prefix_groups(prepared, min_prefix_tokens, singles=self._cross_call)
            else:
                groups, rest = [], list(range(len(prepared)))
            store = FeatureStore(self, max_tokens, self._visual_uses(prepared, groups, rest))
            for batch in self.token_batches([len(prepared[i]) for i in rest], max_tokens):
                check()
                rows = [rest[j] for j in batch]
                for i, logit in zip(rows, self._forward_split([prepared[i] for i in rows], store=store)):
                    out[i] = logit
            for prefix_len, members in groups:
                check()
                cache = self._prefix_cache(prepared[members[0]], prefix_len, store)
                suffix_lengths = [len(prepared[i]) - prefix_len for i in members]
                for batch in self.suffix_batches(suffix_lengths, prefix_len, max_tokens):
                    check()
                    rows = [members[j] for j in batch]
                    logits = self._forward_split([prepared[i] for i in rows], prefix_len, cache, store)
                    for i, logit in zip(rows, logits):
                        out[i] = logit
        return torch.stack(out)  # type: ignore[arg-type]

    @staticmethod
    def needs_grad(prepared: list[PreparedQuery]) -> bool:
        """True when gradients are on and some visual's pixels require them (the forwards keep the graph)."""
        return torch.is_grad_enabled() and any(v.pixel_values.requires_grad for p in prepared for v in p.visuals)

    @property
    def _cross_call(self) -> bool:
        """True when a cross-call prefix cache is attached and has a byte budget."""
        return self.prefix_cache is not None and self.prefix_cache.enabled

    @staticmethod
    def _visual_uses(
        prepared: list[PreparedQuery], groups: list[tuple[int, list[int]]], rest: list[int]
    ) -> Counter[int]:
        """How many forwards of this call read each visual (a prefix counts once for its whole group)."""
        uses: Counter[int] = Counter()
        for i in rest:
            uses.update(id(v) for v in prepared[i].visuals)
        for prefix_len, members in groups:
            first = prepared[members[0]]
            uses.update(id(v) for v, (s, _) in zip(first.visuals, first.spans) if s < prefix_len)
            for i in members:
                uses.update(id(v) for v in prepared[i].visuals_from(prefix_len))
        return uses

    def _forward_split(
        self, rows: list[PreparedQuery], start: int = 0, cache: Any = None, store: FeatureStore | None = None
    ) -> torch.Tensor:
        """Forward `rows`; on out-of-memory split the batch in half and retry."""
        try:
            return self._forward(rows, start, cache, store=store)
        except OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(rows) == 1:
                raise RuntimeError(
                    f"out of GPU memory scoring a single query of {len(rows[0])} tokens; lower the pixel budget "
                    "(--max-pixels / max_pixels), use bf16, or use a device_map over several GPUs"
                ) from exc
            self.stats["oom_splits"] += 1
            half = len(rows) // 2
            return torch.cat(
                [
                    self._forward_split(rows[:half], start, cache, store),
                    self._forward_split(rows[half:], start, cache, store),
                ]
            )

    def _prefix_cache(self, query: PreparedQuery, prefix_len: int, store: FeatureStore | None = None) -> Any:
        """The shared prefix's KV cache: from the cross-call cache, else run once (and stored there)."""
        visuals = [v for v, (s, _) in zip(query.visuals, query.spans) if s < prefix_len]
        key = None
        if self._cross_call:
            key = prefix_key(
                query.input_ids[:prefix_len],
                query.positions[..., :prefix_len],
                visuals,
                self.vlm.dtype,
                self.vlm.device,
            )
            cached = self.prefix_cache.get(key)
            if cached is not None:
                self.stats["prefix_cache_hits"] += 1
                if store is not None:
                    store.release(visuals)
                return cached
            self.stats["prefix_cache_misses"] += 1
        ids = query.input_ids[None, :prefix_len]
        store = store if store is not None else FeatureStore(self, self._tower_tokens)
        out = self.vlm.model(
            attention_mask=torch.ones_like(ids),
            position_ids=query.positions[..., :prefix_len].unsqueeze(-2),
            use_cache=True,
            logits_to_keep=1,
            **self._visual_inputs(ids, visuals, store),
        )
        store.release(visuals)
        self.stats["prefix_forwards"] += 1
        cache = output_cache(out)
        if key is not None:
            self.stats["prefix_cache_evictions"] += self.prefix_cache.put(key, cache)
            self.stats["prefix_cache_bytes"] = self.prefix_cache.bytes
        return cache

    def _visual_inputs(self, ids: torch.Tensor, visuals: list[EncodedVisual], store: FeatureStore) -> dict[str, Any]:
        """Forward keywords for `ids` [B, L] and its visuals: their features (encoded once per call), else pixels."""
        features = store.get(visuals) if self.reuse_features and visuals else None
        if features is None:
            return {"input_ids": ids, **self.family.model_inputs(visuals, self.vlm.dtype)}
        return self.family.feature_inputs(self.vlm.model, ids, features)

    @property
    def _tower_tokens(self) -> int:
        """Vision tokens per tower call outside `last_logits`: the device's default forward budget."""
        return GPU_BATCH_TOKENS if self.vlm.device.type == "cuda" else CPU_BATCH_TOKENS

    def position_logits(self, rows: list[PreparedQuery], keep: int) -> torch.Tensor:
        """Logits [B, keep, V] (float32) of each row's last `keep` positions, with gradients (for training)."""
        return self._forward(rows, keep=keep)

    def _forward(
        self,
        rows: list[PreparedQuery],
        start: int = 0,
        cache: Any = None,
        keep: int = 1,
        store: FeatureStore | None = None,
        return_cache: bool = False,
    ) -> Any:
        """One left-padded forward over tokens [start:] of each row, optionally after a prefix cache.

        Returns the last position's logits [B, V], or the last `keep` positions' [B, keep, V] when keep > 1;
        with `return_cache`, (logits, the KV cache extended by this forward) for generation to continue.
        """
        device = self.vlm.device
        tails = [r.input_ids[start:] for r in rows]
        ids, mask, positions = left_padded(tails, [r.positions[..., start:] for r in rows], self.pad_id, device)
        visuals = [v for r in rows for v in r.visuals_from(start)]
        store = store if store is not None else FeatureStore(self, self._tower_tokens)
        kwargs: dict[str, Any] = self._visual_inputs(ids, visuals, store)
        if cache is not None:
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([torch.ones((len(rows), start), dtype=mask.dtype, device=device), mask], dim=1)
            kwargs.update({cache_keyword(self.vlm.model): cache, "use_cache": True})
        else:
            kwargs["use_cache"] = return_cache
        out = self.vlm.model(attention_mask=mask, position_ids=positions, logits_to_keep=keep, **kwargs)
        store.release(visuals)
        self.stats["forwards"] += 1
        self.stats["tokens"] += int(mask.sum())
        logits = out.logits[:, -1].float() if keep == 1 else out.logits[:, -keep:].float()
        return (logits, output_cache(out)) if return_cache else logits

    # --- generation (chain of thought) ------------------------------------------------------------------
    def generate(
        self,
        prepared: list[PreparedQuery],
        max_new_tokens: int,
        max_tokens: int,
        sampling: Sampling = GREEDY,
        **options: Any,
    ) -> list[list[str]]:
        """`sampling.samples` continuations per prepared query, all queries decoded together.

        `options`: prefix_reuse, min_prefix_tokens, keys, stop (see `generation.generate_judged`)."""
        return generate_batch(self, prepared, max_new_tokens, max_tokens, sampling, **options)

    def generate_judged(
        self,
        prepared: list[PreparedQuery],
        judge: Judge,
        max_new_tokens: int,
        max_tokens: int,
        sampling: Sampling = GREEDY,
        **options: Any,
    ) -> list[list[Sample]]:
        """As `generate`, and each continuation's verdict logits read from its decode batch's KV cache:
        `judge(i, text)` is the judged query of a continuation of query i (see `generation.generate_judged`)."""
        return generate_judged(self, prepared, max_new_tokens, max_tokens, sampling, judge=judge, **options)
