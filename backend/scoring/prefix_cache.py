"""A cross-call prefix cache: recent shared prefixes' KV caches, least recently used evicted first, bounded by bytes.

A prefix is what many queries begin with: the system prompt and criteria, a pairwise reference, a few-shot set.
The scorer runs each shared prefix once per call; this cache keeps its KV cache for later calls too, so a
server or a ComfyUI graph that scores against the same reference or examples again skips the prefix forward.

Entries are keyed by the prefix's token ids, its position ids and a content hash of every visual in it (the
preprocessed pixel bytes and patch grid, never a Python `id()`, which a later object may reuse), plus the
model's dtype and device. One cache belongs to one `RewardModel` (one set of weights); `clear()` it when those
weights change. The scorer never uses it when gradients are needed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import torch

from ..vlm.base import EncodedVisual

# 256 MiB of KV caches: ~10 reference-image prefixes of a 7B Qwen2.5-VL in bf16 at 448 px, hundreds on small models.
DEFAULT_PREFIX_CACHE_BYTES = 256 * 1024 * 1024


def tensor_digest(hasher: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes to `hasher`."""
    data = tensor.detach().to("cpu").contiguous()
    hasher.update(f"{data.dtype}{tuple(data.shape)}".encode())
    if data.numel():
        hasher.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())


def visual_digest(visual: EncodedVisual) -> bytes:
    """Content hash of one preprocessed visual: kind, pixel bytes and patch grid."""
    hasher = hashlib.blake2b(digest_size=20)
    hasher.update(visual.kind.encode())
    tensor_digest(hasher, visual.pixel_values)
    if visual.grid_thw is not None:
        tensor_digest(hasher, visual.grid_thw)
    return hasher.digest()


def prefix_key(
    input_ids: torch.Tensor, positions: torch.Tensor, visuals: list[EncodedVisual], dtype: Any, device: Any
) -> bytes:
    """The cache key of a prefix: its tokens, positions, visuals' content hashes, the model's dtype and device."""
    hasher = hashlib.blake2b(digest_size=24)
    hasher.update(f"{dtype}|{device}".encode())
    tensor_digest(hasher, input_ids)
    tensor_digest(hasher, positions)
    for visual in visuals:
        hasher.update(visual_digest(visual))
    return hasher.digest()


def check_budget(max_bytes: Any) -> int:
    """`max_bytes` when it is a usable budget; ValueError naming `prefix_cache_bytes` otherwise."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise ValueError(
            f"prefix_cache_bytes must be a whole number of bytes >= 0 (0 disables the cache), got {max_bytes!r}"
        )
    return max_bytes


def cache_bytes(cache: Any) -> int:
    """Bytes held by a transformers KV cache's key and value tensors."""
    tensors: list[Any] = []
    for layer in getattr(cache, "layers", None) or []:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    if not tensors:  # older releases keep per-layer lists
        tensors = list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class PrefixCache:
    """An LRU of prefix KV caches within `max_bytes` (0 disables it); counts hits, misses and evictions."""

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES):
        self.max_bytes = check_budget(max_bytes)
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        """False when the byte budget is 0."""
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Any | None:
        """The stored KV cache for `key` (marked recently used), or None; counts a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: bytes, cache: Any) -> int:
        """Store a KV cache (never mutated afterwards), evicting least recently used ones to fit; returns
        how many were evicted. A cache larger than the whole budget is not stored."""
        size = cache_bytes(cache)
        with self._lock:
            if key in self._entries:
                self.bytes -= self._entries.pop(key)[1]
            if size > self.max_bytes:
                return 0
            evicted = 0
            while self._entries and self.bytes + size > self.max_bytes:
                _, (_, old) = self._entries.popitem(last=False)
                self.bytes -= old
                evicted += 1
            self._entries[key] = (cache, size)
            self.bytes += size
            self.evictions += evicted
            return evicted

    def clear(self) -> None:
        """Drop every entry (e.g. after the model's weights change); the counters stay."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def stats(self) -> dict[str, int]:
        """hits, misses, evictions, entries, bytes and max_bytes."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._entries),
                "bytes": self.bytes,
                "max_bytes": self.max_bytes,
            }
