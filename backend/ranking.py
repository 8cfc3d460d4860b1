"""The one ranking order (best first, ties to the lower index) and the checks on how many items a ranking
or a tournament takes; scoring results, ComfyUI selection and node summaries all use them."""

from __future__ import annotations

from collections.abc import Sequence

MIN_TOURNAMENT = 2  # a round robin needs someone to play against


def ranking_order(scores: Sequence[float]) -> list[int]:
    """Indices from the highest score to the lowest (ties: lower index first)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def check_top_k(top_k: int | None, n: int) -> int:
    """How many of `n` items to keep: a positive integer capped at n (None = all); ValueError otherwise."""
    if top_k is None:
        return n
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return min(top_k, n)


def check_tournament_size(n: int, name: str = "candidates") -> None:
    """A tournament needs at least two entrants; the message names the input `name`."""
    if n < MIN_TOURNAMENT:
        raise ValueError(f"{name}: a tournament needs at least {MIN_TOURNAMENT} candidates, got {n}")
